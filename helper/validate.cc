// SPDX-License-Identifier: Apache-2.0
#include "helper/validate.h"

#include <fcntl.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>

#include "common/names.h"
#include "common/unique_fd.h"
#include "helper/paths.h"

namespace sbx::validate {
namespace {

Status refuse(int err, std::string why) {
  return Status(Step::kValidateRequest, err, std::move(why));
}

// `rest` beneath the directory `dir`, both reached with no symlink, and its stat: how every
// link target, device and caller directory is opened. `what` names it in a refusal.
Result<UniqueFd> open_beneath(const std::string& dir, std::string_view rest,
                              const std::string& what, struct stat* st) {
  UniqueFd dir_fd(paths::open_no_symlinks(AT_FDCWD, dir, O_PATH | O_DIRECTORY, false));
  if (!dir_fd) return refuse(errno, "open " + dir);
  UniqueFd fd(paths::open_no_symlinks(dir_fd.get(), rest, O_PATH, true));
  if (!fd) {
    const int err = errno;
    return refuse(err, what + (err == ELOOP ? " goes through a symlink" : " cannot be opened"));
  }
  if (fstat(fd.get(), st) != 0) return refuse(errno, "fstat " + what);
  return fd;
}

Result<UniqueFd> open_link_target(const std::string& name, const std::string& target,
                                  const policy::Policy& policy) {
  if (std::string why = check_absolute_path(target); !why.empty()) {
    return refuse(EINVAL, "link " + name + " target " + why);
  }
  for (const auto& root : policy.image_roots) {
    std::string_view rest;
    if (!path_relative_to(root, target, &rest) || rest.empty()) continue;
    struct stat st;
    auto fd = open_beneath(root, rest, "link " + name + " target " + target, &st);
    if (fd.ok() && !S_ISREG(st.st_mode)) {
      return refuse(EINVAL, "link " + name + " target is not a file");
    }
    return fd;
  }
  return refuse(EPERM, "link " + name + " target " + target + " is outside every image_root");
}

Status check_link_target(const std::string& name, const std::string& target,
                         const policy::Policy& policy) {
  auto fd = open_link_target(name, target, policy);
  return fd.ok() ? Status() : fd.status();
}

// A character device the policy lists, beneath /dev, reached from /dev with no symlink.
Result<UniqueFd> open_device(const std::string& path, const policy::Policy& policy) {
  const std::string what = "files.devices entry " + path;
  if (std::string why = check_absolute_path(path); !why.empty())
    return refuse(EINVAL, what + " " + why);
  std::string_view rest;
  if (!path_relative_to("/dev", path, &rest) || rest.empty()) {
    return refuse(EPERM, what + " is not under /dev");
  }
  bool listed = false;
  for (const auto& d : policy.devices) listed |= d == path;
  if (!listed) return refuse(EPERM, what + " is not a device the policy allows");
  struct stat st;
  auto fd = open_beneath("/dev", rest, what, &st);
  if (fd.ok() && !S_ISCHR(st.st_mode)) {
    return refuse(ENODEV, what + " is not a character device");
  }
  return fd;
}

// A path in or beneath a policy read_only entry, every component root-owned and not
// group/other-writable (the policy file's own trust check), no symlink anywhere.
Result<UniqueFd> open_read_only(const std::string& path, const policy::Policy& policy) {
  const std::string what = "files.read_only entry " + path;
  if (std::string why = check_absolute_path(path); !why.empty() || path == "/") {
    return refuse(EINVAL, what + " " + (why.empty() ? "is /" : why));
  }
  bool listed = false;
  std::string_view rest;
  for (const auto& r : policy.read_only) listed |= path_relative_to(r, path, &rest);
  if (!listed) return refuse(EPERM, what + " is not in or beneath a policy read_only path");
  auto fd = paths::open_root_owned(path, O_PATH, Step::kValidateRequest);
  if (!fd.ok()) {
    return refuse(fd.status().err(), what + ": " + fd.status().detail());
  }
  return fd;
}

// A caller-owned directory that is a direct child of a sandbox root (never a root itself),
// reached with no symlink.
Result<UniqueFd> open_caller_dir(const std::string& field, const std::string& path,
                                 const policy::Policy& policy, const Caller& caller) {
  const std::string what = field + " " + path;
  if (std::string why = check_absolute_path(path); !why.empty() || path == "/") {
    return refuse(EINVAL, what + " " + (why.empty() ? "is /" : why));
  }
  const std::string* root = nullptr;
  for (const auto& r : policy.sandbox_roots) {
    if (path == r) return refuse(EPERM, what + " is a sandbox root itself");
    if (path_dirname(path) == r) root = &r;
  }
  if (root == nullptr) return refuse(EPERM, what + " is not a direct child of any sandbox_root");
  struct stat st;
  auto fd = open_beneath(*root, path_basename(path), what, &st);
  if (!fd.ok()) return fd;
  if (!S_ISDIR(st.st_mode)) return refuse(ENOTDIR, what + " is not a directory");
  if (st.st_uid != caller.uid) return refuse(EPERM, what + " is not owned by the caller");
  return fd;
}

}  // namespace

Result<SandboxPlace> check_request(const protocol::LaunchRequest& req, const policy::Policy& policy,
                                   const Caller& caller, size_t received_fds) {
  if (caller.uid == 0 && !policy.allow_root_vmm) {
    return refuse(EPERM, "the VMM would run as uid 0 and the policy has allow_root_vmm = false");
  }
  if (std::string why = check_sandbox_id(req.id); !why.empty()) return refuse(EINVAL, "id " + why);

  bool vmm_allowed = false;
  for (const auto& v : policy.vmms) vmm_allowed |= v == req.vmm;
  if (!vmm_allowed) return refuse(EPERM, "vmm " + req.vmm + " is not allowed by the policy");

  for (size_t i = 0; i < req.env.size(); ++i) {
    if (std::string why = check_env_entry(req.env[i]); !why.empty()) {
      return refuse(EINVAL, "env entry " + std::to_string(i) + ": " + why);
    }
    std::string_view name = std::string_view(req.env[i]).substr(0, req.env[i].find('='));
    for (size_t j = 0; j < i; ++j) {
      if (std::string_view(req.env[j]).substr(0, req.env[j].find('=')) == name) {
        return refuse(EINVAL, "env name " + std::string(name) + " given twice");
      }
    }
  }

  if (std::string why = check_absolute_path(req.sandbox_dir); !why.empty()) {
    return refuse(EINVAL, "sandbox_dir " + why);
  }
  SandboxPlace place;
  for (const auto& root : policy.sandbox_roots) {
    if (req.sandbox_dir == root) {
      return refuse(EPERM, "sandbox_dir " + req.sandbox_dir + " is a sandbox root itself");
    }
    if (path_dirname(req.sandbox_dir) == root) {
      place.root = root;
      place.name = std::string(path_basename(req.sandbox_dir));
    }
  }
  if (place.root.empty()) {
    return refuse(EPERM,
                  "sandbox_dir " + req.sandbox_dir + " is not a direct child of any sandbox_root");
  }

  if (req.netns) {
    if (std::string why = check_path_component(*req.netns); !why.empty()) {
      return refuse(EINVAL, "netns " + why);
    }
    if (!policy::netns_allowed(policy, *req.netns, caller.uid)) {
      return refuse(EPERM, "netns " + *req.netns + " is not allowed by the policy");
    }
  }

  for (size_t i = 0; i < req.links.size(); ++i) {
    const auto& link = req.links[i];
    if (std::string why = check_path_component(link.name); !why.empty()) {
      return refuse(EINVAL, "link name " + why);
    }
    for (size_t j = 0; j < i; ++j) {
      if (req.links[j].name == link.name) return refuse(EINVAL, "link " + link.name + " twice");
    }
    // With `files`, open_files opens (and so checks) every link target where it is used.
    if (!req.files) {
      if (Status st = check_link_target(link.name, link.target, policy); !st.ok()) return st;
    }
  }

  if (req.jail && policy.jail == policy::JailMode::kOff) {
    return refuse(EPERM, "the request asks for a jail and the policy has jail = off");
  }
  if (req.jail && !req.pid_namespace) {
    // The jail's /proc is that of the VMM's PID namespace: without one it would show the host.
    return refuse(EINVAL, "a jail needs a PID namespace (pid_namespace false was asked)");
  }
  if (!req.jail && policy.jail == policy::JailMode::kRequired) {
    return refuse(EPERM, "the request has no jail and the policy has jail = required");
  }

  if (received_fds != req.pass_fd_targets.size()) {
    return refuse(EINVAL, "the message carries " + std::to_string(received_fds) +
                              " fds but names " + std::to_string(req.pass_fd_targets.size()));
  }
  return place;
}

Result<OpenedFiles> open_files(const protocol::LaunchRequest& req, const policy::Policy& policy,
                               const Caller& caller) {
  OpenedFiles out;
  if (!req.files) return out;
  for (const auto& path : req.devices) {
    auto fd = open_device(path, policy);
    if (!fd.ok()) return fd.status();
    out.devices.push_back({path, fd.take()});
  }
  for (const auto& path : req.read_only) {
    auto fd = open_read_only(path, policy);
    if (!fd.ok()) return fd.status();
    out.read_only.push_back({path, fd.take()});
  }
  for (const auto& path : req.read_write) {
    auto fd = open_caller_dir("files.read_write entry", path, policy, caller);
    if (!fd.ok()) return fd.status();
    out.read_write.push_back({path, fd.take()});
  }
  // A socket's directory that is also a read_write entry is that entry, opened once.
  if (req.api_socket_dir && std::find(req.read_write.begin(), req.read_write.end(),
                                      *req.api_socket_dir) == req.read_write.end()) {
    auto fd = open_caller_dir("the API socket's directory", *req.api_socket_dir, policy, caller);
    if (!fd.ok()) return fd.status();
    out.api_socket_dir = OpenedPath{*req.api_socket_dir, fd.take()};
  }
  for (const auto& link : req.links) {
    auto fd = open_link_target(link.name, link.target, policy);
    if (!fd.ok()) return fd.status();
    (link.name == "rootfs.ext4" ? out.images_rw : out.images_ro)
        .push_back({link.target, fd.take()});
  }
  return out;
}

}  // namespace sbx::validate
