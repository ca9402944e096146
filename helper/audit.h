// SPDX-License-Identifier: Apache-2.0
// The helper's audit trail: one record set per launch request, refused requests included, in
// libvirt's VM-lifecycle format (AUDIT_VIRT_RESOURCE records, then one AUDIT_VIRT_CONTROL), sent
// to the kernel audit subsystem, or to syslog (LOG_AUTHPRIV) when the kernel does not take them.
// Records, fields and encoding: docs/audit.md.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/protocol.h"
#include "common/status.h"
#include "common/unique_fd.h"

namespace sbx::audit {

// The record types, as libaudit.h names them AUDIT_VIRT_CONTROL and AUDIT_VIRT_RESOURCE. The
// helper does not link libaudit: it sends the records itself (audit.cc), and a privileged
// binary carries no library code it does not need.
inline constexpr int kVirtControl = 2500;
inline constexpr int kVirtResource = 2501;

// Caller-supplied values are cut to these many bytes, so that even a record whose values are
// all hex-encoded stays under the kernel's 8560-byte limit for a user record's text.
inline constexpr size_t kMaxNameBytes = 256;   // ids, netns and link names
inline constexpr size_t kMaxPathBytes = 3600;  // the VMM, the sandbox dir, link targets

struct Record {
  int type;          // AUDIT_VIRT_RESOURCE (2501) or AUDIT_VIRT_CONTROL (2500)
  std::string text;  // space-separated key=value fields
};

// `name="value"` when the value is printable ASCII with no space, quote, '=' or '\';
// otherwise `name=HEX` (the bytes in upper-case hex, as the kernel and libaudit encode untrusted
// strings), so no value can end its field and start another. Values are cut at `max_bytes`.
std::string encode_field(std::string_view name, std::string_view value, size_t max_bytes);

// The record set for one request: `request` is null when none was decoded (a failure at
// load_policy or read_request). `outcome` is ok on the way to exec, else the failure;
// `vm_pid` is reported on success only (failures report -1). The control record names the
// confinement: `landlock-abi` (the ABI of the Landlock layer, 0 for none, ? when not yet
// decided: pass -1) and `seccomp-sha256` (the digest of the VMM's syscall filter).
std::vector<Record> records_for(const protocol::LaunchRequest* request, const Status& outcome,
                                pid_t vm_pid, int landlock_abi = -1);

// The records as syslog lines (facility LOG_AUTHPRIV) with the fields the kernel would have
// stamped. Opens and closes the syslog socket, so none is left for the VMM.
void write_to_syslog(const std::vector<Record>& records);

// The kernel's audit socket for the life of one launch.
class Trail {
 public:
  Trail() = default;
  Trail(Trail&&) = default;
  Trail& operator=(Trail&&) = default;

  // Opens a NETLINK_AUDIT socket (no capability is needed to open one), once. Call before the
  // request's netns is joined, so the socket stays in the helper's own network namespace;
  // send() opens it itself for the failures that come earlier. Never fails: when no socket can
  // be opened, send() says why.
  void open();

  // Sends each record and waits for the kernel's acknowledgement. The Status (step
  // write_audit) carries the errno of the first record not taken: EPERM without
  // CAP_AUDIT_WRITE or once closed, EPROTONOSUPPORT without kernel audit.
  Status send(const std::vector<Record>& records);

  // send(), and the whole set to syslog when any record was not taken.
  void write(const std::vector<Record>& records);

  // Closes the socket. Call before the capability drop: the kernel checks CAP_AUDIT_WRITE at
  // every send, so the socket is of no use after it, and the fd must be gone before the
  // passed fds are placed.
  void close();

 private:
  UniqueFd fd_;
  bool opened_ = false;     // open() ran (or close() did): it never opens a socket again
  int unusable_errno_ = 0;  // why there is no socket, once opened_ and fd_ is empty
  uint32_t seq_ = 0;
};

}  // namespace sbx::audit
