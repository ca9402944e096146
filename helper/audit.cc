// SPDX-License-Identifier: Apache-2.0
#include "helper/audit.h"

#include <fcntl.h>
#include <linux/netlink.h>
#include <poll.h>
#include <sys/socket.h>
#include <syslog.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstring>

#include "helper/seccomp.h"

namespace sbx::audit {
namespace {

constexpr int kAckTimeoutMs = 1000;

// Bytes that would let a value end its field (space, quotes, '=') or its line, or confuse a
// reader (backslash, control and non-ASCII bytes), force the hex form: what libaudit's
// audit_value_needs_encoding() tests (quotes, controls, space, DEL and, as its char is
// signed, every non-ASCII byte), plus ', = and \ (tests/unit/audit_record_test.cc compares).
bool needs_hex(std::string_view value) {
  for (char c : value) {
    const auto byte = static_cast<unsigned char>(c);
    if (byte <= 0x20 || byte >= 0x7f || c == '"' || c == '\'' || c == '=' || c == '\\') {
      return true;
    }
  }
  return false;
}

// A decimal number from a /proc/self file (loginuid, sessionid), or `fallback`: the values
// libaudit's audit_getloginuid() and audit_get_session() give when the file cannot be read.
unsigned read_proc_self_number(const char* path, unsigned fallback) {
  UniqueFd fd(open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
  if (!fd) return fallback;
  char buf[16];
  ssize_t n = read(fd.get(), buf, sizeof(buf));
  if (n <= 0) return fallback;
  unsigned value = 0;
  auto [end, ec] = std::from_chars(buf, buf + n, value);
  return ec == std::errc() && end != buf ? value : fallback;
}

std::string result_text(const Status& outcome) {
  return outcome.ok() ? "res=success" : "res=failed";
}

const char* type_name(int type) {
  return type == kVirtControl ? "VIRT_CONTROL" : "VIRT_RESOURCE";
}

// libaudit's audit_log_user_message() would append its own exe= (the helper) and res=, giving
// these records two exe= fields, and its HIDE_IT mode reports a missing CAP_AUDIT_WRITE or a
// kernel refusal as success, which `audit = required` must see. So the records are sent here
// as libaudit's audit_send() sends one: user messages with NLM_F_ACK, each answered by the
// kernel with an NLMSG_ERROR (error 0: accepted). All of a launch's records go in one sendmsg
// (the kernel handles every message of a netlink packet in order and answers each), then the
// answers are read. Returns 0 or the errno of the first record the kernel refused.
int send_user_records(int fd, uint32_t first_seq, const std::vector<Record>& records) {
  std::vector<std::vector<char>> msgs;
  std::vector<iovec> iov;
  msgs.reserve(records.size());
  for (size_t i = 0; i < records.size(); ++i) {
    const Record& record = records[i];
    std::vector<char>& msg = msgs.emplace_back(NLMSG_SPACE(record.text.size() + 1), '\0');
    nlmsghdr hdr{};
    hdr.nlmsg_len = static_cast<uint32_t>(NLMSG_LENGTH(record.text.size() + 1));
    hdr.nlmsg_type = static_cast<uint16_t>(record.type);
    hdr.nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK;
    hdr.nlmsg_seq = first_seq + static_cast<uint32_t>(i);
    std::memcpy(msg.data(), &hdr, sizeof(hdr));
    std::memcpy(msg.data() + NLMSG_HDRLEN, record.text.data(), record.text.size());
    iov.push_back({msg.data(), msg.size()});  // NLMSG_SPACE: each message aligned
  }
  sockaddr_nl kernel{};
  kernel.nl_family = AF_NETLINK;
  msghdr packet{};
  packet.msg_name = &kernel;
  packet.msg_namelen = sizeof(kernel);
  packet.msg_iov = iov.data();
  packet.msg_iovlen = iov.size();
  ssize_t sent;
  do {
    sent = sendmsg(fd, &packet, 0);
  } while (sent < 0 && errno == EINTR);
  if (sent < 0) return errno;
  // The kernel handles the records inside sendmsg and queues the answers before returning; the
  // timeout only bounds a misbehaving kernel. Answers to older sequence numbers are skipped.
  int first_error = 0;
  size_t answered = 0;
  const uint32_t end_seq = first_seq + static_cast<uint32_t>(records.size());
  for (int tries = 0; answered < records.size() && tries < 8 + 2 * static_cast<int>(records.size());
       ++tries) {
    char reply[1024];
    sockaddr_nl from{};
    socklen_t from_len = sizeof(from);
    ssize_t got = recvfrom(fd, reply, sizeof(reply), MSG_DONTWAIT,
                           reinterpret_cast<sockaddr*>(&from), &from_len);
    if (got < 0 && errno == EAGAIN) {
      pollfd pfd{fd, POLLIN, 0};
      int ready = poll(&pfd, 1, kAckTimeoutMs);
      if (ready < 0 && errno != EINTR) return errno;
      if (ready == 0) return ETIMEDOUT;
      continue;
    }
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) return errno;
    // Only the kernel (port 0) answers; only the header and nlmsgerr are read (an error answer
    // may carry a copy of the record, cut to the buffer).
    if (from.nl_pid != 0 || static_cast<size_t>(got) < NLMSG_LENGTH(sizeof(nlmsgerr))) continue;
    nlmsghdr answer;
    std::memcpy(&answer, reply, sizeof(answer));
    if (answer.nlmsg_type != NLMSG_ERROR || answer.nlmsg_seq < first_seq ||
        answer.nlmsg_seq >= end_seq) {
      continue;
    }
    nlmsgerr err;
    std::memcpy(&err, reply + NLMSG_HDRLEN, sizeof(err));
    if (first_error == 0) first_error = -err.error;
    ++answered;
  }
  if (answered < records.size()) return ETIMEDOUT;
  return first_error;
}

}  // namespace

// Opened and closed here, so no syslog socket is left for the VMM or under a passed fd's number.
void write_to_syslog(const std::vector<Record>& records) {
  openlog("sbx-nsexec", LOG_PID | LOG_NDELAY, LOG_AUTHPRIV);
  const pid_t pid = getpid();
  const unsigned uid = getuid();
  const unsigned auid = read_proc_self_number("/proc/self/loginuid", ~0U);
  const unsigned ses = read_proc_self_number("/proc/self/sessionid", ~1U);
  for (const Record& r : records) {
    int priority = r.text.ends_with("res=failed") ? LOG_WARNING : LOG_NOTICE;
    syslog(priority, "type=%s pid=%d uid=%u auid=%u ses=%u msg='%s'", type_name(r.type), pid, uid,
           auid, ses, r.text.c_str());
  }
  closelog();
}

std::string encode_field(std::string_view name, std::string_view value, size_t max_bytes) {
  value = value.substr(0, max_bytes);
  std::string out(name);
  out += '=';
  if (!needs_hex(value)) return out + '"' + std::string(value) + '"';
  std::string hex(value.size() * 2 + 1, '\0');
  static constexpr char kHexDigits[] = "0123456789ABCDEF";  // as audit_encode_value()
  for (size_t i = 0; i < value.size(); ++i) {
    const auto byte = static_cast<unsigned char>(value[i]);
    hex[2 * i] = kHexDigits[byte >> 4];
    hex[2 * i + 1] = kHexDigits[byte & 0xf];
  }
  hex.resize(value.size() * 2);
  return out + hex;
}

std::vector<Record> records_for(const protocol::LaunchRequest* request, const Status& outcome,
                                pid_t vm_pid, int landlock_abi) {
  std::vector<Record> out;
  const std::string res = result_text(outcome);
  const std::string vm = request ? encode_field("vm", request->id, kMaxNameBytes) : "vm=?";
  if (request != nullptr) {
    // What the launch attaches to the VM, as libvirt records a VM's resources at its start.
    const std::string head = "virt=sbx resrc=";
    const std::string reason = " reason=start " + vm;
    if (request->netns) {
      out.push_back({kVirtResource, head + "netns" + reason + " old-netns=? " +
                                        encode_field("new-netns", *request->netns, kMaxNameBytes) +
                                        " " + res});
    }
    out.push_back({kVirtResource, head + "fs" + reason + " old-fs=? " +
                                      encode_field("new-fs", request->sandbox_dir, kMaxPathBytes) +
                                      " " + res});
    for (const auto& link : request->links) {
      out.push_back(
          {kVirtResource, head + "disk" + reason + " " +
                              encode_field("link", link.name, kMaxNameBytes) + " old-disk=? " +
                              encode_field("new-disk", link.target, kMaxPathBytes) + " " + res});
    }
  }
  std::string control = "virt=sbx op=start";
  if (!outcome.ok()) control += " reason=" + std::string(step_name(outcome.step()));
  control += " " + vm + " vm-pid=" + std::to_string(outcome.ok() ? vm_pid : -1);
  control += " " + (request ? encode_field("exe", request->vmm, kMaxPathBytes) : "exe=?");
  // The namespaces the launch makes for the VMM (launch::unshare_namespaces): fixed words,
  // from the request's pid_namespace alone.
  control += request == nullptr       ? " namespaces=?"
             : request->pid_namespace ? " namespaces=mnt,ipc,cgroup,pid"
                                      : " namespaces=mnt,ipc,cgroup";
  control +=
      " landlock-abi=" + (landlock_abi < 0 ? std::string("?") : std::to_string(landlock_abi));
  control += " seccomp-sha256=" + std::string(seccomp::filter_digest());
  out.push_back({kVirtControl, control + " " + res});
  return out;
}

void Trail::open() {
  if (opened_) return;
  opened_ = true;
  int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_AUDIT);
  if (fd < 0) {
    unusable_errno_ = errno != 0 ? errno : EPROTONOSUPPORT;
    return;
  }
  fd_.reset(fd);
  // Acknowledgements carry only the header, not a copy of the record. Best effort: without it
  // (kernels before 4.3) the answer is read cut to the buffer, which is enough.
  int one = 1;
  (void)setsockopt(fd, SOL_NETLINK, NETLINK_CAP_ACK, &one, sizeof(one));
}

Status Trail::send(const std::vector<Record>& records) {
  open();
  if (!fd_) return Status(Step::kWriteAudit, unusable_errno_, "no audit socket");
  if (records.empty()) return {};
  const uint32_t first = seq_ + 1;
  seq_ += static_cast<uint32_t>(records.size());
  if (int err = send_user_records(fd_.get(), first, records); err != 0) {
    return Status(Step::kWriteAudit, err, "the kernel did not take the audit record");
  }
  return {};
}

void Trail::write(const std::vector<Record>& records) {
  if (!send(records).ok()) write_to_syslog(records);
}

void Trail::close() {
  fd_.reset();
  opened_ = true;
  unusable_errno_ = EPERM;  // what a send without CAP_AUDIT_WRITE would get
}

}  // namespace sbx::audit
