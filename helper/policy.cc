// SPDX-License-Identifier: Apache-2.0
#include "helper/policy.h"

#include <fcntl.h>
#include <fnmatch.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>

#include "common/names.h"
#include "helper/paths.h"

namespace sbx::policy {
namespace {

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) {
    s.remove_suffix(1);
  }
  return s;
}

bool parse_u64(std::string_view v, uint64_t min, uint64_t max, uint64_t* out) {
  if (v.empty()) return false;
  auto [ptr, ec] = std::from_chars(v.data(), v.data() + v.size(), *out);
  return ec == std::errc() && ptr == v.data() + v.size() && *out >= min && *out <= max;
}

// A netns glob: the characters of a netns name plus fnmatch's * ? [ ] and the {uid} token.
std::string check_netns_glob(std::string_view glob) {
  if (glob.empty() || glob.size() > 255) return "must be 1 to 255 characters";
  std::string_view rest = glob;
  while (!rest.empty()) {
    if (rest.starts_with("{uid}")) {
      rest.remove_prefix(5);
      continue;
    }
    char c = rest.front();
    bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '.' || c == '-' || c == '*' || c == '?' || c == '[' || c == ']' ||
              c == '!';
    if (!ok)
      return std::string("contains '") + c + "' (allowed: A-Z a-z 0-9 _ . - * ? [ ] ! {uid})";
    rest.remove_prefix(1);
  }
  return {};
}

std::string expand_uid(std::string_view glob, uid_t uid) {
  std::string out;
  std::string uid_text = std::to_string(uid);
  size_t pos = 0;
  while (pos < glob.size()) {
    if (glob.substr(pos).starts_with("{uid}")) {
      out += uid_text;
      pos += 5;
    } else {
      out += glob[pos++];
    }
  }
  return out;
}

// The words of a key that takes one of a few values, for parse and format alike.
template <typename E>
struct Choice {
  std::string_view name;
  E value;
};
// In the order the error message lists them.
constexpr Choice<AuditMode> kAuditChoices[] = {{"required", AuditMode::kRequired},
                                               {"best_effort", AuditMode::kBestEffort}};
constexpr Choice<LandlockMode> kLandlockChoices[] = {{"required", LandlockMode::kRequired},
                                                     {"best_effort", LandlockMode::kBestEffort},
                                                     {"off", LandlockMode::kOff}};
constexpr Choice<JailMode> kJailChoices[] = {
    {"off", JailMode::kOff}, {"optional", JailMode::kOptional}, {"required", JailMode::kRequired}};

// Sets *out from `value`; otherwise returns "KEY must be A, B or C".
template <typename E, size_t N>
std::string parse_choice(std::string_view key, std::string_view value,
                         const Choice<E> (&choices)[N], E* out) {
  std::string names;
  for (size_t i = 0; i < N; ++i) {
    if (choices[i].name == value) {
      *out = choices[i].value;
      return {};
    }
    names += (i == 0 ? "" : i + 1 == N ? " or " : ", ") + std::string(choices[i].name);
  }
  return std::string(key) + " must be " + names;
}

template <typename E, size_t N>
std::string_view choice_name(const Choice<E> (&choices)[N], E value) {
  for (const auto& c : choices) {
    if (c.value == value) return c.name;
  }
  return "?";
}

}  // namespace

Result<Policy> parse(std::string_view text, std::string_view filename) {
  Policy p;
  std::vector<std::string_view> seen_once;  // the single-valued keys given so far
  size_t line_no = 0;
  auto fail = [&](const std::string& why) {
    return Status(Step::kLoadPolicy, EINVAL,
                  std::string(filename) + ":" + std::to_string(line_no) + ": " + why);
  };
  if (text.find('\0') != std::string_view::npos) {
    return Status(Step::kLoadPolicy, EINVAL, std::string(filename) + ": contains NUL bytes");
  }
  while (!text.empty()) {
    ++line_no;
    size_t nl = text.find('\n');
    std::string_view line = text.substr(0, nl);
    text.remove_prefix(nl == std::string_view::npos ? text.size() : nl + 1);
    line = trim(line);
    if (line.empty() || line.front() == '#') continue;
    size_t eq = line.find('=');
    if (eq == std::string_view::npos) return fail("expected 'key = value'");
    std::string_view key = trim(line.substr(0, eq));
    std::string_view value = trim(line.substr(eq + 1));
    if (value.empty()) return fail("key '" + std::string(key) + "' has no value");
    for (std::string_view once :
         {"tmpfs_size_mb", "rlimit_nofile", "allow_root_vmm", "audit", "landlock", "jail"}) {
      if (key != once) continue;
      for (std::string_view seen : seen_once) {
        if (seen == once) return fail(std::string(key) + " given twice");
      }
      seen_once.push_back(once);
    }
    auto add_path = [&](std::vector<std::string>& list) -> std::string {
      if (std::string why = check_absolute_path(value); !why.empty()) return "path " + why;
      if (value == "/") return "path must not be '/'";
      for (const auto& e : list) {
        if (e == value) return "duplicate entry";
      }
      if (list.size() >= kMaxEntriesPerKey) return "too many entries";
      list.emplace_back(value);
      return {};
    };
    std::string why;
    if (key == "vmm") {
      why = add_path(p.vmms);
    } else if (key == "sandbox_root") {
      why = add_path(p.sandbox_roots);
    } else if (key == "image_root") {
      why = add_path(p.image_roots);
    } else if (key == "netns") {
      why = check_netns_glob(value);
      if (why.empty()) {
        if (p.netns_globs.size() >= kMaxEntriesPerKey) return fail("too many netns entries");
        p.netns_globs.emplace_back(value);
      } else {
        why = "netns glob " + why;
      }
    } else if (key == "tmpfs_size_mb") {
      if (!parse_u64(value, 1, kMaxTmpfsSizeMb, &p.tmpfs_size_mb)) {
        why = "tmpfs_size_mb must be an integer in 1..65536";
      }
    } else if (key == "rlimit_nofile") {
      uint64_t v;
      if (!parse_u64(value, 16, kMaxRlimitNofile, &v)) {
        why = "rlimit_nofile must be an integer in 16..1048576";
      } else {
        p.rlimit_nofile = v;
      }
    } else if (key == "allow_root_vmm") {
      if (value == "true") {
        p.allow_root_vmm = true;
      } else if (value != "false") {
        why = "allow_root_vmm must be true or false";
      }
    } else if (key == "audit") {
      why = parse_choice(key, value, kAuditChoices, &p.audit);
    } else if (key == "device") {
      std::string_view rest;
      if (!path_relative_to("/dev", value, &rest) || rest.empty()) {
        why = "device " + std::string(value) + " is not under /dev";
      } else {
        why = add_path(p.devices);
      }
    } else if (key == "read_only") {
      why = add_path(p.read_only);
    } else if (key == "jail") {
      why = parse_choice(key, value, kJailChoices, &p.jail);
    } else if (key == "landlock") {
      why = parse_choice(key, value, kLandlockChoices, &p.landlock);
    } else {
      why = "unknown key '" + std::string(key) + "'";
    }
    if (!why.empty()) return fail(why);
  }
  return p;
}

Result<Policy> load(const std::string& path) {
  auto fd = paths::open_root_owned(path, O_RDONLY, Step::kLoadPolicy);
  if (!fd.ok()) return fd.status();
  struct stat st;
  if (fstat(fd.value().get(), &st) != 0) return Status(Step::kLoadPolicy, errno, "fstat " + path);
  if (!S_ISREG(st.st_mode))
    return Status(Step::kLoadPolicy, EINVAL, path + " is not a regular file");
  if (static_cast<size_t>(st.st_size) > kMaxPolicyBytes) {
    return Status(Step::kLoadPolicy, EFBIG, path + " is larger than 64 KiB");
  }
  std::string text;
  char buf[4096];
  while (true) {
    ssize_t n = read(fd.value().get(), buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Status(Step::kLoadPolicy, errno, "read " + path);
    if (n == 0) break;
    if (text.size() + static_cast<size_t>(n) > kMaxPolicyBytes) {
      return Status(Step::kLoadPolicy, EFBIG, path + " is larger than 64 KiB");
    }
    text.append(buf, static_cast<size_t>(n));
  }
  return parse(text, path);
}

bool netns_allowed(const Policy& policy, std::string_view name, uid_t uid) {
  std::string n(name);
  for (const auto& glob : policy.netns_globs) {
    if (fnmatch(expand_uid(glob, uid).c_str(), n.c_str(), FNM_PATHNAME | FNM_PERIOD) == 0) {
      return true;
    }
  }
  return false;
}

std::string format(const Policy& p) {
  std::string out;
  for (const auto& v : p.vmms) out += "vmm = " + v + "\n";
  for (const auto& v : p.sandbox_roots) out += "sandbox_root = " + v + "\n";
  for (const auto& v : p.image_roots) out += "image_root = " + v + "\n";
  for (const auto& v : p.netns_globs) out += "netns = " + v + "\n";
  out += "tmpfs_size_mb = " + std::to_string(p.tmpfs_size_mb) + "\n";
  if (p.rlimit_nofile) out += "rlimit_nofile = " + std::to_string(*p.rlimit_nofile) + "\n";
  out += std::string("allow_root_vmm = ") + (p.allow_root_vmm ? "true" : "false") + "\n";
  out += "audit = " + std::string(choice_name(kAuditChoices, p.audit)) + "\n";
  for (const auto& v : p.devices) out += "device = " + v + "\n";
  for (const auto& v : p.read_only) out += "read_only = " + v + "\n";
  out += "landlock = " + std::string(choice_name(kLandlockChoices, p.landlock)) + "\n";
  out += "jail = " + std::string(choice_name(kJailChoices, p.jail)) + "\n";
  return out;
}

}  // namespace sbx::policy
