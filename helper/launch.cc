// SPDX-License-Identifier: Apache-2.0
#include "helper/launch.h"

#include <fcntl.h>
#include <linux/sched.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <optional>

#include "common/protocol.h"
#include "common/unique_fd.h"
#include "helper/audit.h"
#include "helper/caps.h"
#include "helper/exec.h"
#include "helper/fds.h"
#include "helper/init.h"
#include "helper/jail.h"
#include "helper/landlock.h"
#include "helper/mounts.h"
#include "helper/netns.h"
#include "helper/policy.h"
#include "helper/seccomp.h"
#include "helper/validate.h"

namespace sbx::launch {
namespace {

struct Caller {
  uid_t uid;
  gid_t gid;
  pid_t parent;  // the supervisor's pid as seen at entry
};

// Re-arms PDEATHSIG (the exec with file capabilities cleared it) and then makes sure the
// parent did not die before it was armed: either way the VMM must not outlive the supervisor.
Status arm_parent_death_signal(const Caller& caller, bool in_new_pid_ns) {
  if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) != 0) {
    return Status(Step::kParentDeathSignal, errno, "PR_SET_PDEATHSIG");
  }
  // Inside a new PID namespace getppid() is 0 (the parent is outside); the control socket's
  // hang-up tells whether the supervisor still holds its end.
  if (!in_new_pid_ns && getppid() != caller.parent) {
    return Status(Step::kParentDeathSignal, ESRCH, "the supervisor exited");
  }
  pollfd pfd{fds::kControlFd, POLLRDHUP, 0};
  if (poll(&pfd, 1, 0) > 0 && (pfd.revents & (POLLHUP | POLLRDHUP | POLLERR))) {
    return Status(Step::kParentDeathSignal, ESRCH, "the supervisor closed the control socket");
  }
  return {};
}

Status set_rlimits(const policy::Policy& policy) {
  if (!policy.rlimit_nofile) return {};
  rlimit lim;
  if (getrlimit(RLIMIT_NOFILE, &lim) != 0) return Status(Step::kSetRlimits, errno, "getrlimit");
  // The policy value is a ceiling: the helper cannot raise a hard limit and does not try.
  rlim_t value = *policy.rlimit_nofile;
  if (value > lim.rlim_max) value = lim.rlim_max;
  lim.rlim_cur = lim.rlim_max = value;
  if (setrlimit(RLIMIT_NOFILE, &lim) != 0) {
    return Status(Step::kSetRlimits, errno, "setrlimit RLIMIT_NOFILE");
  }
  return {};
}

Status set_sid() {
  if (setsid() < 0) return Status(Step::kSetsid, errno, "setsid");
  return {};
}

Status unshare_namespaces(bool pid_namespace) {
  if (unshare(CLONE_NEWNS | (pid_namespace ? CLONE_NEWPID : 0)) != 0) {
    return Status(Step::kUnshare, errno, pid_namespace ? "unshare mount+pid" : "unshare mount");
  }
  return {};
}

// The Landlock layer, last before exec. With `files` the VMM may use only: its own binary,
// the sandbox dir, the API socket's dir and files.read_write (read-write, no exec), the images
// (rootfs.ext4 read-write, the others read-only), files.read_only (read, exec for the dynamic
// loader), files.devices (with ioctls), the basic /dev nodes and /proc. The supervisor learns
// the ABI applied from the CONFINEMENT message.
Status apply_landlock(int abi, const protocol::LaunchRequest& req, validate::OpenedFiles& files,
                      int vmm_fd, int sandbox_fd) {
  std::vector<landlock::Rule> rules;
  if (req.files) {
    for (auto [fd, access] : {std::pair{vmm_fd, landlock::kVmmBinary},
                              std::pair{sandbox_fd, landlock::kReadWriteDir}}) {
      UniqueFd dup(fcntl(fd, F_DUPFD_CLOEXEC, 0));
      if (!dup) return Status(Step::kLandlock, errno, "dup an fd for its rule");
      rules.push_back({std::move(dup), access});
    }
    auto add = [&rules](std::vector<validate::OpenedPath>& opened, uint64_t access) {
      for (auto& o : opened) rules.push_back({std::move(o.fd), access});
      opened.clear();
    };
    add(files.read_write, landlock::kReadWriteDir);
    add(files.read_only, landlock::kReadOnlyTree);
    add(files.devices, landlock::kDevice);
    add(files.images_ro, landlock::kImageReadOnly);
    add(files.images_rw, landlock::kImageReadWrite);
    if (files.api_socket_dir) {
      rules.push_back({std::move(files.api_socket_dir->fd), landlock::kReadWriteDir});
    }
    if (Status st = landlock::add_runtime_paths(rules, req.jail); !st.ok()) return st;
  }
  if (Status st = landlock::apply(abi, req.files, rules); !st.ok()) return st;
  auto bytes = protocol::encode(protocol::ConfinementReport{static_cast<uint32_t>(abi)});
  return protocol::send_datagram(fds::kControlFd, bytes, {}, Step::kLandlock);
}

Status chdir_sandbox(int dir_fd) {
  if (fchdir(dir_fd) != 0) return Status(Step::kChdirSandbox, errno, "fchdir to the sandbox dir");
  return {};
}

// The launch's record set, written while the helper still holds CAP_AUDIT_WRITE: the kernel
// checks it on every send (netlink_capable: the socket's opener and the sender at send time),
// so neither a socket opened earlier nor any record after the capability drop reaches the
// audit trail. The record therefore says the launch passed every step up to the drop; a
// failure after it is recorded through syslog only (docs/audit.md). The socket is closed here.
Status record_launch(audit::Trail& trail, const protocol::LaunchRequest& req, pid_t vm_pid,
                     policy::AuditMode mode, int landlock_abi) {
  auto records = audit::records_for(&req, {}, vm_pid, landlock_abi);
  Status sent = trail.send(records);
  trail.close();
  if (sent.ok()) return {};
  // Refused: syslog then gets the refusal's set (from run()), not this one for a launch that
  // does not happen.
  if (mode == policy::AuditMode::kRequired) {
    return Status(sent.step(), sent.err(), sent.detail() + " and the policy has audit = required");
  }
  audit::write_to_syslog(records);
  return {};
}

// The one fork of a PID-namespace launch. The child (pid 1 of the new namespace) is made a
// child of the supervisor (CLONE_PARENT), so the supervisor reaps it and its PDEATHSIG follows
// the supervisor. This process writes the launch's audit record set (it knows the child's pid
// as the supervisor sees it), passes the child its verdict through a pipe, reports the child's
// pid and exits: the record is written while the child goes on, off its path. Returns in the
// child only; its trail then waits for the parent's verdict before it sends anything.
Status fork_into_pid_namespace(const Caller& caller, audit::Trail& trail,
                               const protocol::LaunchRequest& req, policy::AuditMode mode,
                               int landlock_abi) {
  int pipe_fds[2];
  if (pipe2(pipe_fds, O_CLOEXEC) != 0) {
    return Status(Step::kForkPidNamespace, errno, "pipe for the audit verdict");
  }
  UniqueFd verdict_in(pipe_fds[0]), verdict_out(pipe_fds[1]);
  // The child holds its end until the VMM starts: above every passed-fd target number.
  if (Status st = fds::lift_above_targets(verdict_in); !st.ok()) return st;
  clone_args args{};
  args.flags = CLONE_PARENT;
  long pid = syscall(SYS_clone3, &args, sizeof(args));
  if (pid < 0) return Status(Step::kForkPidNamespace, errno, "clone3 into the PID namespace");
  if (pid > 0) {
    const pid_t child = static_cast<pid_t>(pid);
    Status recorded = record_launch(trail, req, child, mode, landlock_abi);
    const int err = recorded.ok() ? 0 : (recorded.err() != 0 ? recorded.err() : EIO);
    (void)!write(verdict_out.get(), &err, sizeof(err));  // if this fails the child refuses
    auto bytes = protocol::encode(protocol::PidReport{child});
    Status sent = protocol::send_datagram(fds::kControlFd, bytes, {}, Step::kForkPidNamespace);
    _exit(sent.ok() ? 0 : 125);
  }
  verdict_out.reset();
  trail.expect_parent_verdict(std::move(verdict_in));
  if (setsid() < 0) return Status(Step::kSetsid, errno, "setsid in the PID namespace");
  if (Status st = arm_parent_death_signal(caller, true); !st.ok()) return st;
  return {};
}

// The jail's entries: the sandbox dir, the images, files.read_only, files.read_write and the
// API socket's directory (bound like a read_write entry unless it is one), files.devices.
std::vector<jail::Entry> jail_entries(const protocol::LaunchRequest& req,
                                      const validate::OpenedFiles& files, int sandbox_fd) {
  std::vector<jail::Entry> entries;
  entries.push_back({req.sandbox_dir, sandbox_fd, jail::kReadWrite});
  for (const auto& o : files.images_ro)
    entries.push_back({o.path, o.fd.get(), jail::kImageReadOnly});
  for (const auto& o : files.images_rw) entries.push_back({o.path, o.fd.get(), jail::kReadWrite});
  for (const auto& o : files.read_only) entries.push_back({o.path, o.fd.get(), jail::kReadOnly});
  for (const auto& o : files.read_write) entries.push_back({o.path, o.fd.get(), jail::kReadWrite});
  if (files.api_socket_dir) {
    bool listed = false;
    for (const auto& o : files.read_write) listed |= o.path == files.api_socket_dir->path;
    if (!listed) {
      entries.push_back(
          {files.api_socket_dir->path, files.api_socket_dir->fd.get(), jail::kReadWrite});
    }
  }
  for (const auto& o : files.devices) entries.push_back({o.path, o.fd.get(), jail::kDevice});
  return entries;
}

// The containment sequence, in order. Returns only on failure (success is the exec). `seen`
// keeps the decoded request for the audit record of a refusal.
Status launch_sequence(const std::string& policy_path, const Caller& caller, audit::Trail& trail,
                       std::optional<protocol::LaunchRequest>& seen) {
  // The policy comes first and from a fixed root-owned path: the caller cannot name another.
  auto policy = policy::load(policy_path);
  if (!policy.ok()) return policy.status();
  auto dgram = protocol::receive_datagram(fds::kControlFd, 10000, protocol::kMaxPassedFds,
                                          Step::kReadRequest);
  if (!dgram.ok()) return dgram.status();
  if (dgram.value().eof) return Status(Step::kReadRequest, ENODATA, "no launch request");
  auto msg = protocol::decode(dgram.value().bytes, Step::kReadRequest);
  if (!msg.ok()) return msg.status();
  auto* request = std::get_if<protocol::LaunchRequest>(&msg.value());
  if (request == nullptr) return Status(Step::kReadRequest, EPROTO, "expected a LAUNCH message");
  const protocol::LaunchRequest& req = seen.emplace(std::move(*request));
  const validate::Caller who{caller.uid, caller.gid};
  const pid_t vm_pid = getpid();  // without a PID namespace the VMM keeps this pid

  // 1. Everything checkable is checked before any namespace or mount changes: the request,
  // the VMM (opened here and executed from this fd), the files, the Landlock layer.
  auto place = validate::check_request(req, policy.value(), who, dgram.value().fds.size());
  if (!place.ok()) return place.status();
  auto vmm = exec::open_vmm(req.vmm);
  if (!vmm.ok()) return vmm.status();
  if (auto checked = validate::open_files(req, policy.value(), who); !checked.ok()) {
    return checked.status();
  }
  auto landlock_abi = landlock::plan(policy.value().landlock, landlock::kernel_abi());
  if (!landlock_abi.ok()) return landlock_abi.status();
  // 2. The VMM leads its own session and process group: the supervisor signals -pid.
  if (Status st = set_sid(); !st.ok()) return st;
  // 3. The VMM dies with the supervisor.
  if (Status st = arm_parent_death_signal(caller, false); !st.ok()) return st;
  // 4. The audit socket first, so it stays in the helper's own netns. Then join the netns
  // before the mount namespace exists, so /sys below belongs to it.
  trail.open();
  if (req.netns) {
    auto fd = netns::open_named(*req.netns);
    if (!fd.ok()) return fd.status();
    if (Status st = netns::join(fd.value().get()); !st.ok()) return st;
  }
  // 5. A private mount namespace (and a PID namespace on request, for the children of this
  // process: the one fork comes at 8c).
  if (Status st = unshare_namespaces(req.pid_namespace); !st.ok()) return st;
  // 6. Nothing below propagates to the host; then what `ip netns exec` does. A jail has
  // neither /sys nor /etc.
  if (Status st = mounts::make_mounts_private(req.propagation_slave); !st.ok()) return st;
  if (req.netns && !req.jail) {
    if (Status st = netns::remount_sys(); !st.ok()) return st;
    if (Status st = netns::bind_etc_files(*req.netns); !st.ok()) return st;
  }
  // The files again, opened and checked in this namespace: the jail's binds are clones of
  // these fds, and open_tree clones only mounts of the caller's own mount namespace.
  auto files = validate::open_files(req, policy.value(), who);
  if (!files.ok()) return files.status();
  // 7. The caller's sandbox dir, no symlinks, with a tmpfs mounted through its fd.
  auto dir = mounts::SandboxDir::make(place.value().root, place.value().name, caller.uid);
  if (!dir.ok()) return dir.status();
  auto tmpfs_size = policy.value().tmpfs_size_mb;
  if (Status st = dir.value().mount_tmpfs(tmpfs_size, caller.uid, caller.gid); !st.ok()) return st;
  // 8. The links, relative to the tmpfs fd.
  if (Status st = dir.value().create_links(req.links); !st.ok()) return st;
  // 8b. The jail: everything the VMM may see bound into a fresh root, which it enters. From
  // here the sandbox dir is the one inside the jail.
  UniqueFd jail_cwd;
  if (req.jail) {
    auto cwd = jail::enter(jail_entries(req, files.value(), dir.value().mount_fd()), req.read_only,
                           req.sandbox_dir);
    if (!cwd.ok()) return cwd.status();
    jail_cwd = cwd.take();
  }
  // 8c. The one fork into the PID namespace, as late as it can be: every page the child writes
  // afterwards costs it a copy-on-write fault. The child is pid 1 and goes on; it mounts the
  // namespace's /proc (a procfs shows the PID namespace of the process that mounts it).
  if (req.pid_namespace) {
    if (Status st =
            fork_into_pid_namespace(caller, trail, req, policy.value().audit, landlock_abi.value());
        !st.ok()) {
      return st;
    }
    if (Status st = req.jail ? jail::mount_proc() : mounts::mount_proc(); !st.ok()) return st;
  }
  // 9. Limits; the audit record while CAP_AUDIT_WRITE is held; then privilege goes:
  // capabilities, no_new_privs, the syscall filter, and the Landlock layer inside it.
  if (Status st = set_rlimits(policy.value()); !st.ok()) return st;
  if (req.pid_namespace) {
    // The parent writes the record; its verdict is taken just before the VMM starts, so this
    // process does not wait for it on the way. Past the drop the socket is of no use here.
    trail.close();
  } else if (Status st =
                 record_launch(trail, req, vm_pid, policy.value().audit, landlock_abi.value());
             !st.ok()) {
    return st;
  }
  if (Status st = caps::drop_all(); !st.ok()) return st;
  if (Status st = caps::set_no_new_privs(); !st.ok()) return st;
  if (Status st = seccomp::install_vmm_filter(); !st.ok()) return st;
  if (Status st = apply_landlock(landlock_abi.value(), req, files.value(), vmm.value().fd.get(),
                                 dir.value().mount_fd());
      !st.ok()) {
    return st;
  }
  // 10. cwd, the exact fd set, exec from the fd checked in step 1. The helper's own fds move
  // above every number the caller may name first, so no passed fd can take their place.
  if (Status st = chdir_sandbox(jail_cwd ? jail_cwd.get() : dir.value().mount_fd()); !st.ok()) {
    return st;
  }
  jail_cwd.reset();
  if (Status st = fds::lift_above_targets(vmm.value().fd); !st.ok()) return st;
  if (Status st = dir.value().lift_fds(); !st.ok()) return st;
  if (Status st = fds::prepare_exec_fds(dgram.value().fds, req.pass_fd_targets); !st.ok()) {
    return st;
  }
  // With a PID namespace this process stays as its init; the VMM is its child. No VMM runs
  // without the parent's verdict on the audit record.
  if (req.pid_namespace) {
    if (Status st = trail.parent_verdict(); !st.ok()) return st;
    auto plan = exec::prepare_exec(vmm.value(), req);
    if (!plan.ok()) return plan.status();
    return init::run(fds::kControlFd, plan.value(), req.vmm);
  }
  return exec::exec_vmm(vmm.value(), req);
}

// Discards what the caller sent and nobody read (the request, when the failure comes before
// read_request). Closing a socket with unread data makes the kernel report ECONNRESET to the
// peer ahead of the ERROR queued for it, and the caller would never learn the step.
void discard_unread_messages() {
  char byte;
  for (int i = 0; i < 16; ++i) {  // the caller sends one message; never loop unbounded
    // MSG_TRUNC drops the rest of the datagram; fds it carried are closed by the kernel.
    if (recv(fds::kControlFd, &byte, sizeof(byte), MSG_DONTWAIT | MSG_TRUNC) <= 0) break;
  }
}

}  // namespace

void fail(const Status& st) {
  protocol::ErrorReport report{st.step(), st.err(), st.detail()};
  discard_unread_messages();
  // Best effort: if the supervisor is gone there is nobody to tell.
  (void)protocol::send_datagram(fds::kControlFd, protocol::encode(report), {}, st.step());
  std::string line = "sbx-nsexec: " + st.message() + "\n";
  (void)!write(STDERR_FILENO, line.data(), line.size());
  _exit(exec::exit_code_for(st));
}

void run(const std::string& policy_path, pid_t parent_at_entry) {
  Caller caller{getuid(), getgid(), parent_at_entry};
  audit::Trail trail;
  std::optional<protocol::LaunchRequest> seen;
  // launch_sequence returns only on failure, after its locals have undone what they can. The
  // refusal is recorded whatever the policy's audit mode: it changes nothing about the outcome.
  Status st = launch_sequence(policy_path, caller, trail, seen);
  trail.write(audit::records_for(seen ? &*seen : nullptr, st, -1, -1));
  fail(st);
}

}  // namespace sbx::launch
