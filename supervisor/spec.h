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
  std::optional<Files> files;
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
