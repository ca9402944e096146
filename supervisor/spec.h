// SPDX-License-Identifier: Apache-2.0
// The sandbox spec (JSON): what one `sbx-supervisor run` launches. Parsed with Boost.JSON;
// unknown keys, wrong types and out-of-range values are refused with the field named.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "common/protocol.h"

namespace sbx::supervisor {

enum class VmmKind { kFirecracker, kCloudHypervisor, kQemu, kGeneric };
enum class Mode { kBoot, kRestore };
enum class Stdio { kInherit, kNull };
// The stop ladder's first step: the kind's own request (QEMU: `quit`), none, or for QEMU the
// guest-visible `system_powerdown`.
enum class GracefulStop { kDefault, kNone, kSystemPowerdown };

std::string_view kind_name(VmmKind kind);

// `files`: what the VMM may use beyond the sandbox dir, the images and the API socket's dir.
struct Files {
  std::vector<std::string> devices;
  std::vector<std::string> read_only;
  std::vector<std::string> read_write;
};

// Spec `cgroup`: the sandbox gets its own cgroup v2, <parent>/<id>. Each limit is already in
// the form its kernel file takes (supervisor/cgroup.h maps them); an unset one is not written.
struct CgroupSpec {
  std::string parent;                      // empty: none in the spec (`--cgroup-parent` may set it)
  std::optional<std::string> memory_max;   // memory.max: bytes or "max"
  std::optional<std::string> memory_high;  // memory.high
  std::optional<std::string> memory_swap_max;  // memory.swap.max
  std::optional<std::string> cpu_max;          // cpu.max: "max|QUOTA [PERIOD]" (microseconds)
  std::optional<uint32_t> cpu_weight;          // cpu.weight: 1..10000
  std::optional<std::string> pids_max;         // pids.max: a count or "max"
  std::optional<std::string> cpuset_cpus;      // cpuset.cpus: a list such as "2-3,6"
  std::optional<std::string> cpuset_mems;      // cpuset.mems
  std::optional<uint32_t> io_weight;           // io.weight (default weight): 1..10000
};

struct Spec {
  std::string id;
  VmmKind kind = VmmKind::kGeneric;
  std::string binary;
  std::vector<std::string> args;
  GracefulStop graceful_stop = GracefulStop::kDefault;
  Mode mode = Mode::kBoot;
  std::string sandbox_dir;
  std::optional<std::string> kernel;
  std::optional<std::string> rootfs;
  std::map<std::string, std::string> snapshot;  // restore mode: link name -> file
  std::optional<std::string> netns;
  std::optional<std::string> api_socket;
  uint32_t stop_timeout_ms = 10000;
  uint32_t ready_timeout_ms = 5000;
  bool pid_namespace = true;  // the default: nothing outlives a killed supervisor
  bool jail = false;
  std::map<std::string, std::string> env;
  Stdio stdio = Stdio::kInherit;
  bool stdio_given = false;  // the spec names `stdio` (--detach makes the default null)
  std::optional<Files> files;
  std::optional<CgroupSpec> cgroup;
};

inline constexpr uint32_t kMaxStopTimeoutMs = 3600 * 1000;
inline constexpr uint32_t kMaxReadyTimeoutMs = 3600 * 1000;

// The spec, or a message that names the offending field ("spec: vmm.kind: ...").
std::variant<Spec, std::string> parse_spec(std::string_view json);

// The VMM's argv[1..]: the kind's API-socket flag, then the spec's args.
std::vector<std::string> vmm_args(const Spec& spec);

// The LAUNCH request the helper gets for this spec.
protocol::LaunchRequest launch_request(const Spec& spec);

}  // namespace sbx::supervisor
