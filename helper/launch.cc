// SPDX-License-Identifier: Apache-2.0
#include "helper/launch.h"

#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
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
#include "helper/seccomp_rules.h"
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

// RLIMIT_NOFILE for the VMM: the hard limit at most seccomp::kExecFd, so the VMM can never
// make an fd of that number (the one its filter lets execveat use); the policy's value, a
// ceiling, lower still. The helper cannot raise a hard limit and does not try.
Status set_rlimits(const policy::Policy& policy) {
  rlimit lim;
  if (getrlimit(RLIMIT_NOFILE, &lim) != 0) return Status(Step::kSetRlimits, errno, "getrlimit");
  rlim_t ceiling = seccomp::kExecFd;
  if (policy.rlimit_nofile && *policy.rlimit_nofile < ceiling) ceiling = *policy.rlimit_nofile;
  if (lim.rlim_max > ceiling) lim.rlim_max = ceiling;
  lim.rlim_cur = policy.rlimit_nofile ? lim.rlim_max : std::min(lim.rlim_cur, lim.rlim_max);
  if (setrlimit(RLIMIT_NOFILE, &lim) != 0) {
    return Status(Step::kSetRlimits, errno, "setrlimit RLIMIT_NOFILE");
  }
  return {};
}

Status set_sid() {
  if (setsid() < 0) return Status(Step::kSetsid, errno, "setsid");
  return {};
}

// A private mount namespace; an IPC namespace, so the caller's SysV objects and POSIX
// message queues are out of reach; a cgroup namespace rooted at the helper's cgroup (the
// sandbox's, when it has one), so /proc/self/cgroup names no host path; and on request a PID
// namespace for the children of this process. The audit record names the same set.
Status unshare_namespaces(bool pid_namespace) {
  if (unshare(CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWCGROUP | (pid_namespace ? CLONE_NEWPID : 0)) !=
      0) {
    return Status(Step::kUnshare, errno,
                  pid_namespace ? "unshare mount+ipc+cgroup+pid" : "unshare mount+ipc+cgroup");
  }
  return {};
}

// The Landlock layer, last before exec. With `files` the VMM may use only: its own binary,
// the sandbox dir, the API socket's dir and files.read_write (read-write, no exec), the images
// (rootfs.ext4 read-write, the others read-only), files.read_only (read, exec for the dynamic
// loader), files.devices (with ioctls), the basic /dev nodes and /proc. The supervisor learns
// the ABI applied from the CONFINEMENT message (confinement_report).
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
  return landlock::apply(abi, req.files, rules);
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
  // Refused: syslog then gets the refusal's set (from refuse()), not this one for a launch that
  // does not happen.
  if (mode == policy::AuditMode::kRequired) {
    return Status(sent.step(), sent.err(), sent.detail() + " and the policy has audit = required");
  }
  audit::write_to_syslog(records);
  return {};
}

// A launch that failed: its refusal records (whatever the policy's audit mode: they change
// nothing about the outcome), then ERROR and the exit.
[[noreturn]] void refuse(audit::Trail& trail, const std::optional<protocol::LaunchRequest>& seen,
                         const Status& st) {
  trail.write(audit::records_for(seen ? &*seen : nullptr, st, -1, -1));
  fail(st);
}

// Pid 1 of the new PID namespace, started without copying this process: clone(CLONE_VM) on a
// region of this process's stack, so the child shares every page already mapped here and
// takes neither the page-table copy of a fork nor a copy-on-write fault per page it writes
// (about 13 us each on a slow-faulting host). The child is made a child of the supervisor
// (CLONE_PARENT): the supervisor reaps it and its PDEATHSIG follows the supervisor. This
// process then exits at once, running no code that touches memory the child uses: every
// signal is blocked across the clone (no handler can run on the way out), the kernel writes
// the child's pid for it (CLONE_PARENT_SETTID), and the exit clears no tid word
// (set_tid_address(NULL)). Until it is gone the kernel may still write the CPU number into
// its rseq area, in the shared thread-local storage; nothing in the child reads it.
class Pid1 {
 public:
  using Body = Status (*)(void* context, pid_t host_pid);

  // Runs body(context, pid) in the child, with the pid the supervisor sees; when it returns
  // (a failure) the child refuses: PID_REPORT, refusal records, ERROR, exit. Returns only when
  // there is no child (step fork_pid_namespace); the parent never returns once there is one.
  // Not instrumented by AddressSanitizer, so `stack` is a plain region of the thread's stack;
  // never inlined, so no other launch carries the region in its frame.
  __attribute__((noinline, no_sanitize("address"))) static Status start(
      Body body, void* context, audit::Trail& trail,
      const std::optional<protocol::LaunchRequest>& seen) {
    // The child's stack: a region of this frame, so of this process's own stack (whose pages
    // the deeper calls before made present, and whose bounds a sanitizer knows). This
    // process's own calls after the clone run below this frame, the child's above: apart.
    alignas(64) char stack[128 * 1024];
    Pid1 start{body, context, &trail, &seen};
    sigset_t all, previous;
    sigfillset(&all);
    sigprocmask(SIG_SETMASK, &all, &previous);
    int pid = clone(&Pid1::entry, stack + sizeof(stack),
                    CLONE_VM | CLONE_PARENT | CLONE_PARENT_SETTID, &start, &start.pid_);
    if (pid < 0) {
      const int err = errno;
      sigprocmask(SIG_SETMASK, &previous, nullptr);
      return Status(Step::kForkPidNamespace, err, "clone into the PID namespace");
    }
    // The child reports its own pid (PID_REPORT) and everything after. syscall() touches only
    // this process's own stack, and errno only on failure.
    syscall(SYS_set_tid_address, nullptr);
    for (;;) syscall(SYS_exit, 0);
  }

 private:
  Pid1(Body body, void* context, audit::Trail* trail,
       const std::optional<protocol::LaunchRequest>* seen)
      : body_(body), context_(context), trail_(trail), seen_(seen) {}

  // Every signal stays blocked in pid 1 (its dispositions are the defaults, which a namespace's
  // init would not act on): init::run waits for the forwarded ones, and the VMM starts with
  // an empty mask.
  static int entry(void* arg) {
    auto* self = static_cast<Pid1*>(arg);
    Status st = self->body_(self->context_, self->pid_);
    // The body returns only on a failure before the VMM's start, with nothing sent yet: the
    // supervisor learns this process's pid (to reap it) ahead of the ERROR.
    (void)protocol::send_datagram(fds::kControlFd,
                                  protocol::encode(protocol::PidReport{self->pid_}), {},
                                  Step::kForkPidNamespace);
    refuse(*self->trail_, *self->seen_, st);
  }

  Body body_;
  void* context_;
  audit::Trail* trail_;
  const std::optional<protocol::LaunchRequest>* seen_;
  pid_t pid_ = 0;  // written by the kernel before the child runs
};

// Pid1::start for a callable: body(pid) runs in the child.
template <typename F>
Status start_pid1(F& body, audit::Trail& trail,
                  const std::optional<protocol::LaunchRequest>& seen) {
  return Pid1::start([](void* f, pid_t pid) { return (*static_cast<F*>(f))(pid); }, &body, trail,
                     seen);
}

// The jail's entries beyond the sandbox dir: the images, files.read_only, files.read_write
// and the API socket's directory (bound like a read_write entry), files.devices.
std::vector<jail::Entry> jail_entries(const validate::OpenedFiles& files) {
  std::vector<jail::Entry> entries;
  for (const auto& o : files.images_ro)
    entries.push_back({o.path, o.fd.get(), jail::kImageReadOnly});
  for (const auto& o : files.images_rw) entries.push_back({o.path, o.fd.get(), jail::kReadWrite});
  for (const auto& o : files.read_only) entries.push_back({o.path, o.fd.get(), jail::kReadOnly});
  for (const auto& o : files.read_write) entries.push_back({o.path, o.fd.get(), jail::kReadWrite});
  if (files.api_socket_dir) {
    entries.push_back(
        {files.api_socket_dir->path, files.api_socket_dir->fd.get(), jail::kReadWrite});
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

  // 1. The request, the VMM (opened here and executed from this fd) and the Landlock layer are
  // checked before any namespace or mount changes; `files` is checked where it is used, in the
  // private mount namespace (step 6), since nothing before it is seen outside this process.
  auto place = validate::check_request(req, policy.value(), who, dgram.value().fds.size());
  if (!place.ok()) return place.status();
  auto vmm = exec::open_vmm(req.vmm);
  if (!vmm.ok()) return vmm.status();
  auto landlock_abi = landlock::plan(policy.value().landlock, landlock::kernel_abi());
  if (!landlock_abi.ok()) return landlock_abi.status();
  // 2. The VMM leads its own session and process group: the supervisor signals -pid. (With a
  // PID namespace the init does, at 8c.)
  if (!req.pid_namespace) {
    if (Status st = set_sid(); !st.ok()) return st;
  }
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
  // 5. Private mount, IPC and cgroup namespaces (and a PID namespace on request, for the
  // children of this process: the one fork comes at 8c).
  if (Status st = unshare_namespaces(req.pid_namespace); !st.ok()) return st;
  // 6. Nothing below propagates to the host; then what `ip netns exec` does. A jail has
  // neither /sys nor /etc.
  if (Status st = mounts::make_mounts_private(req.propagation_slave); !st.ok()) return st;
  if (req.netns && !req.jail) {
    if (Status st = netns::remount_sys(); !st.ok()) return st;
    if (Status st = netns::bind_etc_files(*req.netns); !st.ok()) return st;
  }
  // No cgroupfs in any mode: the caller's uid owns the delegated cgroup tree (a sibling's
  // cgroup.kill, the parent's cgroup.procs, its own limits). After the fresh /sys, which took
  // /sys/fs/cgroup along. A jail leaves the rest of the tree behind, so there only what lies
  // below its directory entries goes, before a recursive bind could take it along.
  std::vector<std::string> jail_dirs;
  if (req.jail) {
    jail_dirs = req.read_only;
    jail_dirs.insert(jail_dirs.end(), req.read_write.begin(), req.read_write.end());
    if (req.api_socket_dir) jail_dirs.push_back(*req.api_socket_dir);
  }
  if (Status st = mounts::detach_cgroup_and_mqueue_mounts(req.jail ? &jail_dirs : nullptr);
      !st.ok()) {
    return st;
  }
  // The files, opened and checked in this namespace (step validate_request): the jail's binds
  // are clones of these fds, and open_tree clones only mounts of the caller's own namespace.
  auto files = validate::open_files(req, policy.value(), who);
  if (!files.ok()) return files.status();
  // 7. The caller's sandbox dir, no symlinks, with a tmpfs mounted through its fd. In a jail
  // the sandbox dir exists only there: no directory is made on the host, and the tmpfs is
  // attached in the jail only (the private namespace's old root is detached on the way in).
  auto dir = req.jail
                 ? Result<mounts::SandboxDir>(mounts::SandboxDir::detached())
                 : mounts::SandboxDir::make(place.value().root, place.value().name, caller.uid);
  if (!dir.ok()) return dir.status();
  auto tmpfs_size = policy.value().tmpfs_size_mb;
  if (Status st = dir.value().mount_tmpfs(tmpfs_size, caller.uid, caller.gid); !st.ok()) return st;
  // 8. The links, relative to the tmpfs fd.
  if (Status st = dir.value().create_links(req.links); !st.ok()) return st;
  // 8b. The jail: everything the VMM may see bound into a fresh root, which it enters. From
  // here the sandbox dir's tmpfs is inside the jail.
  if (req.jail) {
    const jail::Entry sandbox{req.sandbox_dir, dir.value().mount_fd(), 0};
    if (Status st = jail::enter(sandbox, jail_entries(files.value()), req.read_only); !st.ok()) {
      return st;
    }
  }
  // 9. and 10., in the process that becomes the VMM, or (with a PID namespace) in its init:
  // the helper's own fds move above every number the caller may name, so no passed fd can
  // take their place, the VMM's to kExecFd (before the limits, which are lower); limits; the
  // audit record while CAP_AUDIT_WRITE is held; then privilege goes: capabilities,
  // no_new_privs, the syscall filter, and the Landlock layer inside it. Then cwd, the exact
  // fd set and the exec from the fd checked in step 1.
  auto confine_and_start = [&](mounts::SandboxDir& sandbox, pid_t pid) -> Status {
    if (Status st = fds::place_exec_fd(vmm.value().fd); !st.ok()) return st;
    if (Status st = sandbox.lift_fds(); !st.ok()) return st;
    if (Status st = set_rlimits(policy.value()); !st.ok()) return st;
    if (Status st = record_launch(trail, req, pid, policy.value().audit, landlock_abi.value());
        !st.ok()) {
      return st;
    }
    if (Status st = caps::drop_all(); !st.ok()) return st;
    if (Status st = caps::set_no_new_privs(); !st.ok()) return st;
    if (Status st = seccomp::install_vmm_filter(); !st.ok()) return st;
    if (Status st = apply_landlock(landlock_abi.value(), req, files.value(), vmm.value().fd.get(),
                                   sandbox.mount_fd());
        !st.ok()) {
      return st;
    }
    auto confinement =
        protocol::encode(protocol::ConfinementReport{static_cast<uint32_t>(landlock_abi.value())});
    if (Status st = chdir_sandbox(sandbox.mount_fd()); !st.ok()) return st;
    if (Status st = fds::prepare_exec_fds(dgram.value().fds, req.pass_fd_targets); !st.ok()) {
      return st;
    }
    if (!req.pid_namespace) {
      if (Status st = protocol::send_datagram(fds::kControlFd, confinement, {}, Step::kLandlock);
          !st.ok()) {
        return st;
      }
      return exec::exec_vmm(vmm.value(), req);
    }
    // The init stays; the VMM is its child. PID_REPORT and CONFINEMENT go once the VMM runs:
    // every message wakes the supervisor, and none of them is on the VMM's way.
    auto plan = exec::prepare_exec(vmm.value(), req);
    if (!plan.ok()) return plan.status();
    const std::vector<uint8_t> first[] = {protocol::encode(protocol::PidReport{pid}),
                                          std::move(confinement)};
    return init::run(fds::kControlFd, plan.value(), req.vmm, first);
  };
  if (!req.pid_namespace) return confine_and_start(dir.value(), vm_pid);
  // 8c. Pid 1 of the PID namespace, started as late as it can be. It mounts the namespace's
  // /proc (a procfs shows the PID namespace of the process that mounts it); the audit record
  // names it. Its PID_REPORT goes with the VMM's start, or before its ERROR.
  auto pid1 = [&](pid_t host_pid) -> Status {
    mounts::SandboxDir sandbox = std::move(dir.value());  // undone by this process on failure
    if (setsid() < 0) return Status(Step::kSetsid, errno, "setsid in the PID namespace");
    if (Status st = arm_parent_death_signal(caller, true); !st.ok()) return st;
    if (Status st = mounts::mount_proc(req.jail); !st.ok()) return st;
    return confine_and_start(sandbox, host_pid);
  };
  return start_pid1(pid1, trail, seen);
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
  // launch_sequence returns only on failure, after its locals have undone what they can (in a
  // PID namespace, pid 1 refuses by itself).
  refuse(trail, seen, launch_sequence(policy_path, caller, trail, seen));
}

}  // namespace sbx::launch
