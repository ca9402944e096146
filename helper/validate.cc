// SPDX-License-Identifier: Apache-2.0
#include "helper/validate.h"

#include <fcntl.h>
#include <sys/stat.h>

#include <cerrno>

#include "common/names.h"
#include "common/unique_fd.h"
#include "helper/paths.h"

namespace sbx::validate {
namespace {

Status refuse(int err, std::string why) {
  return Status(Step::kValidateRequest, err, std::move(why));
}

Status check_link_target(const std::string& name, const std::string& target,
                         const policy::Policy& policy) {
  if (std::string why = check_absolute_path(target); !why.empty()) {
    return refuse(EINVAL, "link " + name + " target " + why);
  }
  for (const auto& root : policy.image_roots) {
    std::string_view rest;
    if (!path_relative_to(root, target, &rest) || rest.empty()) continue;
    UniqueFd root_fd(paths::open_no_symlinks(AT_FDCWD, root, O_PATH | O_DIRECTORY, false));
    if (!root_fd) return refuse(errno, "open image root " + root);
    UniqueFd fd(paths::open_no_symlinks(root_fd.get(), rest, O_PATH, true));
    if (!fd) {
      int err = errno;
      return refuse(err, "link " + name + " target " + target +
                             (err == ELOOP ? " goes through a symlink" : " cannot be opened"));
    }
    struct stat st;
    if (fstat(fd.get(), &st) != 0) return refuse(errno, "fstat " + target);
    if (!S_ISREG(st.st_mode)) return refuse(EINVAL, "link " + name + " target is not a file");
    return {};
  }
  return refuse(EPERM, "link " + name + " target " + target + " is outside every image_root");
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
    if (Status st = check_link_target(link.name, link.target, policy); !st.ok()) return st;
  }

  if (received_fds != req.pass_fd_targets.size()) {
    return refuse(EINVAL, "the message carries " + std::to_string(received_fds) +
                              " fds but names " + std::to_string(req.pass_fd_targets.size()));
  }
  return place;
}

}  // namespace sbx::validate
