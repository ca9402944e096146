// SPDX-License-Identifier: Apache-2.0
#include "supervisor/spec.h"

#include <boost/json.hpp>

#include "common/names.h"

namespace sbx::supervisor {
namespace json = boost::json;

std::string_view kind_name(VmmKind kind) {
  switch (kind) {
    case VmmKind::kFirecracker:
      return "firecracker";
    case VmmKind::kCloudHypervisor:
      return "cloud-hypervisor";
    case VmmKind::kQemu:
      return "qemu";
    case VmmKind::kGeneric:
      return "generic";
  }
  return "generic";
}

namespace {

class SpecError {
 public:
  SpecError(std::string field, std::string why)
      : text_("spec: " + std::move(field) + ": " + std::move(why)) {}
  const std::string& text() const { return text_; }

 private:
  std::string text_;
};

void check_keys(const json::object& obj, std::initializer_list<std::string_view> known,
                const std::string& prefix) {
  for (const auto& kv : obj) {
    bool ok = false;
    for (auto k : known) ok |= kv.key() == k;
    if (!ok) throw SpecError(prefix + std::string(kv.key()), "unknown key");
  }
}

const json::value* find(const json::object& obj, std::string_view key) {
  auto it = obj.find(key);
  return it == obj.end() ? nullptr : &it->value();
}

std::string get_string(const json::value& v, const std::string& field) {
  if (!v.is_string()) throw SpecError(field, "must be a string");
  std::string s(v.as_string());
  if (s.find('\0') != std::string::npos) throw SpecError(field, "must not contain NUL");
  if (s.size() > protocol::kMaxStringSize) throw SpecError(field, "is longer than 4096 bytes");
  return s;
}

std::string get_path(const json::value& v, const std::string& field) {
  std::string s = get_string(v, field);
  if (std::string why = check_absolute_path(s); !why.empty()) throw SpecError(field, why);
  if (s == "/") throw SpecError(field, "must not be '/'");
  return s;
}

uint32_t get_u32(const json::value& v, const std::string& field, uint32_t min, uint32_t max) {
  int64_t n;
  if (v.is_int64()) {
    n = v.as_int64();
  } else if (v.is_uint64() && v.as_uint64() <= INT64_MAX) {
    n = static_cast<int64_t>(v.as_uint64());
  } else {
    throw SpecError(field, "must be an integer");
  }
  if (n < min || n > max) {
    throw SpecError(field, "must be in " + std::to_string(min) + ".." + std::to_string(max));
  }
  return static_cast<uint32_t>(n);
}

bool get_bool(const json::value& v, const std::string& field) {
  if (!v.is_bool()) throw SpecError(field, "must be true or false");
  return v.as_bool();
}

std::vector<std::string> get_path_list(const json::object& obj, std::string_view key, size_t max) {
  std::vector<std::string> out;
  const json::value* v = find(obj, key);
  if (v == nullptr) return out;
  const std::string field = "files." + std::string(key);
  if (!v->is_array()) throw SpecError(field, "must be an array of absolute paths");
  if (v->as_array().size() > max) {
    throw SpecError(field, "more than " + std::to_string(max) + " entries");
  }
  for (const auto& e : v->as_array()) {
    std::string path = get_path(e, field + "[" + std::to_string(out.size()) + "]");
    for (const auto& seen : out) {
      if (seen == path) throw SpecError(field, path + " is given twice");
    }
    out.push_back(std::move(path));
  }
  return out;
}

Files parse_files(const json::value& v) {
  if (!v.is_object()) throw SpecError("files", "must be an object");
  const json::object& obj = v.as_object();
  check_keys(obj, {"devices", "read_only", "read_write"}, "files.");
  Files files;
  files.devices = get_path_list(obj, "devices", protocol::kMaxDevices);
  files.read_only = get_path_list(obj, "read_only", protocol::kMaxReadOnly);
  files.read_write = get_path_list(obj, "read_write", protocol::kMaxReadWrite);
  return files;
}

// An integer from `min` up to `max`, or the string "max": as the kernel file takes it.
std::string get_count_or_max(const json::value& v, const std::string& field, uint64_t max,
                             uint64_t min = 0) {
  if (v.is_string() && v.as_string() == "max") return "max";
  uint64_t n;
  if (v.is_uint64()) {
    n = v.as_uint64();
  } else if (v.is_int64() && v.as_int64() >= 0) {
    n = static_cast<uint64_t>(v.as_int64());
  } else {
    throw SpecError(field, "must be a non-negative integer or \"max\"");
  }
  if (n < min || n > max) {
    throw SpecError(
        field, "must be in " + std::to_string(min) + ".." + std::to_string(max) + " or \"max\"");
  }
  return std::to_string(n);
}

// Digits only, 1..19 of them; nullopt otherwise.
std::optional<uint64_t> parse_decimal(std::string_view s) {
  if (s.empty() || s.size() > 19) return std::nullopt;
  uint64_t n = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return std::nullopt;
    n = n * 10 + static_cast<uint64_t>(c - '0');
  }
  return n;
}

// cpu.max: "max" or QUOTA, then optionally one space and PERIOD, in microseconds, within the
// kernel's bounds (quota >= 1000, period 1000..1000000), so the kernel cannot refuse it later.
std::string get_cpu_max(const json::value& v, const std::string& field) {
  std::string s = get_string(v, field);
  const std::string why =
      "must be \"max\" or \"QUOTA\", optionally followed by \" PERIOD\" "
      "(microseconds; quota >= 1000, period 1000..1000000)";
  size_t space = s.find(' ');
  std::string_view quota = std::string_view(s).substr(0, space);
  if (quota != "max") {
    auto q = parse_decimal(quota);
    if (!q || *q < 1000) throw SpecError(field, why);
  }
  if (space != std::string::npos) {
    auto p = parse_decimal(std::string_view(s).substr(space + 1));
    if (!p || *p < 1000 || *p > 1000000) throw SpecError(field, why);
  }
  return s;
}

// cpuset.cpus / cpuset.mems: "N" or "N-M" items joined by commas, as the kernel's list format.
std::string get_cpu_list(const json::value& v, const std::string& field) {
  std::string s = get_string(v, field);
  const std::string why = "must be a list such as \"0-3,6\"";
  if (s.empty() || s.size() > 256) throw SpecError(field, why);
  size_t start = 0;
  while (start <= s.size()) {
    size_t comma = s.find(',', start);
    std::string_view item =
        std::string_view(s).substr(start, comma == std::string::npos ? comma : comma - start);
    size_t dash = item.find('-');
    auto lo = parse_decimal(item.substr(0, dash));
    if (!lo) throw SpecError(field, why);
    if (dash != std::string::npos) {
      auto hi = parse_decimal(item.substr(dash + 1));
      if (!hi || *hi < *lo) throw SpecError(field, why);
    }
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return s;
}

CgroupSpec parse_cgroup(const json::value& v) {
  if (!v.is_object()) throw SpecError("cgroup", "must be an object");
  const json::object& o = v.as_object();
  check_keys(o,
             {"parent", "memory_max", "memory_high", "memory_swap_max", "cpu_max", "cpu_weight",
              "pids_max", "cpuset_cpus", "cpuset_mems", "io_weight"},
             "cgroup.");
  CgroupSpec c;
  if (const json::value* p = find(o, "parent")) c.parent = get_path(*p, "cgroup.parent");
  constexpr uint64_t kBytesMax = INT64_MAX;
  if (const json::value* p = find(o, "memory_max")) {
    c.memory_max = get_count_or_max(*p, "cgroup.memory_max", kBytesMax);
  }
  if (const json::value* p = find(o, "memory_high")) {
    c.memory_high = get_count_or_max(*p, "cgroup.memory_high", kBytesMax);
  }
  if (const json::value* p = find(o, "memory_swap_max")) {
    c.memory_swap_max = get_count_or_max(*p, "cgroup.memory_swap_max", kBytesMax);
  }
  if (const json::value* p = find(o, "cpu_max")) c.cpu_max = get_cpu_max(*p, "cgroup.cpu_max");
  if (const json::value* p = find(o, "cpu_weight")) {
    c.cpu_weight = get_u32(*p, "cgroup.cpu_weight", 1, 10000);
  }
  if (const json::value* p = find(o, "pids_max")) {
    // At least 1: the VMM itself is one (with a PID namespace, the init is another).
    c.pids_max = get_count_or_max(*p, "cgroup.pids_max", 4194304, 1);
  }
  if (const json::value* p = find(o, "cpuset_cpus")) {
    c.cpuset_cpus = get_cpu_list(*p, "cgroup.cpuset_cpus");
  }
  if (const json::value* p = find(o, "cpuset_mems")) {
    c.cpuset_mems = get_cpu_list(*p, "cgroup.cpuset_mems");
  }
  if (const json::value* p = find(o, "io_weight")) {
    c.io_weight = get_u32(*p, "cgroup.io_weight", 1, 10000);
  }
  return c;
}

Spec parse_object(const json::object& root) {
  check_keys(root,
             {"id", "vmm", "mode", "sandbox_dir", "kernel", "rootfs", "snapshot", "netns",
              "api_socket", "stop_timeout_ms", "ready_timeout_ms", "pid_namespace", "env", "stdio",
              "files", "jail", "cgroup"},
             "");
  Spec spec;
  auto required = [&](std::string_view key) -> const json::value& {
    const json::value* v = find(root, key);
    if (v == nullptr) throw SpecError(std::string(key), "is required");
    return *v;
  };

  spec.id = get_string(required("id"), "id");
  if (std::string why = check_sandbox_id(spec.id); !why.empty()) throw SpecError("id", why);

  const json::value& vmm = required("vmm");
  if (!vmm.is_object()) throw SpecError("vmm", "must be an object");
  check_keys(vmm.as_object(), {"kind", "binary", "args", "graceful_stop"}, "vmm.");
  const json::value* kind = find(vmm.as_object(), "kind");
  if (kind == nullptr) throw SpecError("vmm.kind", "is required");
  std::string k = get_string(*kind, "vmm.kind");
  if (k == "firecracker") {
    spec.kind = VmmKind::kFirecracker;
  } else if (k == "cloud-hypervisor") {
    spec.kind = VmmKind::kCloudHypervisor;
  } else if (k == "qemu") {
    spec.kind = VmmKind::kQemu;
  } else if (k == "generic") {
    spec.kind = VmmKind::kGeneric;
  } else {
    throw SpecError("vmm.kind", "must be firecracker, cloud-hypervisor, qemu or generic");
  }
  const json::value* binary = find(vmm.as_object(), "binary");
  if (binary == nullptr) throw SpecError("vmm.binary", "is required");
  spec.binary = get_path(*binary, "vmm.binary");
  if (const json::value* args = find(vmm.as_object(), "args")) {
    if (!args->is_array()) throw SpecError("vmm.args", "must be an array of strings");
    size_t i = 0;
    for (const auto& a : args->as_array()) {
      spec.args.push_back(get_string(a, "vmm.args[" + std::to_string(i++) + "]"));
    }
  }

  if (const json::value* g = find(vmm.as_object(), "graceful_stop")) {
    std::string v = get_string(*g, "vmm.graceful_stop");
    if (v == "default") {
      spec.graceful_stop = GracefulStop::kDefault;
    } else if (v == "none") {
      spec.graceful_stop = GracefulStop::kNone;
    } else if (v == "system_powerdown" && spec.kind == VmmKind::kQemu) {
      spec.graceful_stop = GracefulStop::kSystemPowerdown;
    } else {
      throw SpecError("vmm.graceful_stop", spec.kind == VmmKind::kQemu
                                               ? "must be default, none or system_powerdown"
                                               : "must be default or none");
    }
  }
  if (const json::value* mode = find(root, "mode")) {
    std::string m = get_string(*mode, "mode");
    if (m == "boot") {
      spec.mode = Mode::kBoot;
    } else if (m == "restore") {
      spec.mode = Mode::kRestore;
    } else {
      throw SpecError("mode", "must be boot or restore");
    }
  }
  spec.sandbox_dir = get_path(required("sandbox_dir"), "sandbox_dir");
  if (const json::value* v = find(root, "kernel")) spec.kernel = get_path(*v, "kernel");
  if (const json::value* v = find(root, "rootfs")) spec.rootfs = get_path(*v, "rootfs");
  if (const json::value* v = find(root, "snapshot")) {
    if (!v->is_object()) throw SpecError("snapshot", "must be an object of name: path");
    for (const auto& kv : v->as_object()) {
      std::string field = "snapshot." + std::string(kv.key());
      std::string name(kv.key());
      if (std::string why = check_path_component(name); !why.empty()) {
        throw SpecError(field, "link name " + why);
      }
      if (name == "rootfs.ext4" || name == "vmlinux") throw SpecError(field, "reserved name");
      spec.snapshot[name] = get_path(kv.value(), field);
    }
  }
  if (spec.mode == Mode::kBoot) {
    if (!spec.snapshot.empty()) throw SpecError("snapshot", "only valid with mode restore");
  } else if (spec.kernel) {
    throw SpecError("kernel", "not used with mode restore (the snapshot holds the kernel)");
  }
  if (const json::value* v = find(root, "netns")) {
    spec.netns = get_string(*v, "netns");
    if (std::string why = check_path_component(*spec.netns); !why.empty()) {
      throw SpecError("netns", why);
    }
  }
  if (const json::value* v = find(root, "api_socket")) {
    spec.api_socket = get_path(*v, "api_socket");
    if (spec.api_socket->size() > 107) throw SpecError("api_socket", "is longer than 107 bytes");
  }
  if (spec.kind != VmmKind::kGeneric && !spec.api_socket) {
    throw SpecError("api_socket", "is required for vmm.kind " + k);
  }
  if (const json::value* v = find(root, "stop_timeout_ms")) {
    spec.stop_timeout_ms = get_u32(*v, "stop_timeout_ms", 0, kMaxStopTimeoutMs);
  }
  if (const json::value* v = find(root, "ready_timeout_ms")) {
    spec.ready_timeout_ms = get_u32(*v, "ready_timeout_ms", 1, kMaxReadyTimeoutMs);
  }
  if (const json::value* v = find(root, "pid_namespace")) {
    spec.pid_namespace = get_bool(*v, "pid_namespace");
  }
  if (const json::value* v = find(root, "env")) {
    if (!v->is_object()) throw SpecError("env", "must be an object of NAME: value");
    for (const auto& kv : v->as_object()) {
      std::string name(kv.key());
      std::string field = "env." + name;
      if (std::string why = check_env_name(name); !why.empty()) throw SpecError(field, why);
      spec.env[name] = get_string(kv.value(), field);
    }
    if (spec.env.size() > protocol::kMaxEnv) throw SpecError("env", "more than 64 entries");
  }
  if (const json::value* v = find(root, "stdio")) {
    std::string s = get_string(*v, "stdio");
    spec.stdio_given = true;
    if (s == "inherit") {
      spec.stdio = Stdio::kInherit;
    } else if (s == "null") {
      spec.stdio = Stdio::kNull;
    } else {
      throw SpecError("stdio", "must be inherit or null");
    }
  }
  if (const json::value* v = find(root, "files")) spec.files = parse_files(*v);
  if (const json::value* v = find(root, "jail")) spec.jail = get_bool(*v, "jail");
  if (spec.jail && !spec.files) spec.files = Files{};  // a jail holds only what files names
  if (const json::value* v = find(root, "cgroup")) spec.cgroup = parse_cgroup(*v);
  if (vmm_args(spec).size() > protocol::kMaxArgs) throw SpecError("vmm.args", "more than 64 args");
  return spec;
}

}  // namespace

std::variant<Spec, std::string> parse_spec(std::string_view text) {
  if (text.size() > 1024 * 1024) return std::string("spec: larger than 1 MiB");
  boost::system::error_code ec;
  json::value root = json::parse(text, ec);
  if (ec) return "spec: not valid JSON: " + ec.message();
  if (!root.is_object()) return std::string("spec: must be a JSON object");
  try {
    return parse_object(root.as_object());
  } catch (const SpecError& e) {
    return e.text();
  }
}

std::vector<std::string> vmm_args(const Spec& spec) {
  std::vector<std::string> args;
  const std::string sock = spec.api_socket.value_or("");
  switch (spec.kind) {
    case VmmKind::kFirecracker:
      args = {"--api-sock", sock};
      break;
    case VmmKind::kCloudHypervisor:
      args = {"--api-socket", "path=" + sock};
      break;
    case VmmKind::kQemu:
      args = {"-qmp", "unix:" + sock + ",server=on,wait=off"};
      break;
    case VmmKind::kGeneric:
      break;
  }
  args.insert(args.end(), spec.args.begin(), spec.args.end());
  return args;
}

protocol::LaunchRequest launch_request(const Spec& spec) {
  protocol::LaunchRequest req;
  req.id = spec.id;
  req.vmm = spec.binary;
  req.args = vmm_args(spec);
  for (const auto& [name, value] : spec.env) req.env.push_back(name + "=" + value);
  req.sandbox_dir = spec.sandbox_dir;
  req.netns = spec.netns;
  // Boot links the kernel and rootfs; restore links only the rootfs and the snapshot files and
  // starts the VMM bare, as the reference restore path does.
  if (spec.mode == Mode::kBoot && spec.kernel) req.links.push_back({"vmlinux", *spec.kernel});
  if (spec.rootfs) req.links.push_back({"rootfs.ext4", *spec.rootfs});
  if (spec.mode == Mode::kRestore) {
    for (const auto& [name, path] : spec.snapshot) req.links.push_back({name, path});
  }
  req.pid_namespace = spec.pid_namespace;
  req.jail = spec.jail;
  if (spec.files) {
    req.files = true;
    req.devices = spec.files->devices;
    req.read_only = spec.files->read_only;
    req.read_write = spec.files->read_write;
    if (spec.api_socket) req.api_socket_dir = std::string(path_dirname(*spec.api_socket));
  }
  return req;
}

}  // namespace sbx::supervisor
