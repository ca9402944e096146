// SPDX-License-Identifier: Apache-2.0
#include "common/protocol.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstring>
#include <memory>

#include "common/names.h"
#include "common/unique_fd.h"

namespace sbx::protocol {
namespace {

// Little-endian regardless of host order, so the layout in docs/protocol.md is exact.
void put_u16(std::vector<uint8_t>& out, uint16_t v) {
  out.push_back(static_cast<uint8_t>(v));
  out.push_back(static_cast<uint8_t>(v >> 8));
}
void put_u32(std::vector<uint8_t>& out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<uint8_t>(v >> (8 * i)));
}
uint16_t get_u16(const uint8_t* p) {
  return static_cast<uint16_t>(p[0] | (p[1] << 8));
}
uint32_t get_u32(const uint8_t* p) {
  return static_cast<uint32_t>(p[0]) | (static_cast<uint32_t>(p[1]) << 8) |
         (static_cast<uint32_t>(p[2]) << 16) | (static_cast<uint32_t>(p[3]) << 24);
}

class Writer {
 public:
  explicit Writer(MessageType type) {
    put_u32(out_, kMagic);
    put_u16(out_, kVersion);
    put_u16(out_, static_cast<uint16_t>(type));
    put_u32(out_, 0);  // total length, patched in finish()
    put_u32(out_, 0);  // reserved
  }
  void field(uint16_t tag, std::span<const uint8_t> value) {
    put_u16(out_, tag);
    put_u32(out_, static_cast<uint32_t>(value.size()));
    out_.insert(out_.end(), value.begin(), value.end());
  }
  void string(uint16_t tag, std::string_view s) {
    field(tag, {reinterpret_cast<const uint8_t*>(s.data()), s.size()});
  }
  void u32(uint16_t tag, uint32_t v) {
    uint8_t b[4] = {static_cast<uint8_t>(v), static_cast<uint8_t>(v >> 8),
                    static_cast<uint8_t>(v >> 16), static_cast<uint8_t>(v >> 24)};
    field(tag, b);
  }
  std::vector<uint8_t> finish() {
    uint32_t size = static_cast<uint32_t>(out_.size());
    for (int i = 0; i < 4; ++i) out_[8 + i] = static_cast<uint8_t>(size >> (8 * i));
    return std::move(out_);
  }

 private:
  std::vector<uint8_t> out_;
};

Status bad(Step step, int err, std::string detail) {
  return Status(step, err, "protocol: " + std::move(detail));
}

// Reads fields one at a time; every length is checked against what is left.
class Reader {
 public:
  Reader(std::span<const uint8_t> body, Step step) : body_(body), step_(step) {}
  bool done() const { return pos_ == body_.size(); }
  // Next field; false with status_ set on malformed input.
  bool next(uint16_t* tag, std::span<const uint8_t>* value) {
    if (body_.size() - pos_ < kFieldHeaderSize) {
      status_ = bad(step_, EPROTO, "truncated field header");
      return false;
    }
    *tag = get_u16(body_.data() + pos_);
    uint32_t len = get_u32(body_.data() + pos_ + 2);
    pos_ += kFieldHeaderSize;
    if (len > body_.size() - pos_) {
      status_ = bad(step_, EPROTO, "field " + std::to_string(*tag) + " runs past the message");
      return false;
    }
    *value = body_.subspan(pos_, len);
    pos_ += len;
    return true;
  }
  Status status() const { return status_; }

 private:
  std::span<const uint8_t> body_;
  size_t pos_ = 0;
  Step step_;
  Status status_;
};

bool read_string(std::span<const uint8_t> v, std::string* out, const char* what, Step step,
                 Status* st) {
  if (v.size() > kMaxStringSize) {
    *st = bad(step, E2BIG, std::string(what) + " is longer than 4096 bytes");
    return false;
  }
  if (std::memchr(v.data(), 0, v.size()) != nullptr) {
    *st = bad(step, EPROTO, std::string(what) + " contains NUL");
    return false;
  }
  out->assign(reinterpret_cast<const char*>(v.data()), v.size());
  return true;
}

bool read_u32(std::span<const uint8_t> v, uint32_t* out, const char* what, Step step, Status* st) {
  if (v.size() != 4) {
    *st = bad(step, EPROTO, std::string(what) + " must be 4 bytes");
    return false;
  }
  *out = get_u32(v.data());
  return true;
}

Result<Message> decode_launch(std::span<const uint8_t> body, Step step) {
  LaunchRequest req;
  Reader r(body, step);
  Status st;
  bool seen_id = false, seen_vmm = false, seen_dir = false, seen_flags = false;
  while (!r.done()) {
    uint16_t tag;
    std::span<const uint8_t> v;
    if (!r.next(&tag, &v)) return r.status();
    auto once = [&](bool* seen, const char* what) {
      if (*seen) {
        st = bad(step, EPROTO, std::string("duplicate ") + what);
        return false;
      }
      *seen = true;
      return true;
    };
    switch (static_cast<LaunchTag>(tag)) {
      case LaunchTag::kId:
        if (!once(&seen_id, "id") || !read_string(v, &req.id, "id", step, &st)) return st;
        break;
      case LaunchTag::kVmm:
        if (!once(&seen_vmm, "vmm") || !read_string(v, &req.vmm, "vmm", step, &st)) return st;
        break;
      case LaunchTag::kArg: {
        if (req.args.size() >= kMaxArgs) return bad(step, E2BIG, "more than 64 args");
        std::string s;
        if (!read_string(v, &s, "arg", step, &st)) return st;
        req.args.push_back(std::move(s));
        break;
      }
      case LaunchTag::kEnv: {
        if (req.env.size() >= kMaxEnv) return bad(step, E2BIG, "more than 64 env entries");
        std::string s;
        if (!read_string(v, &s, "env", step, &st)) return st;
        req.env.push_back(std::move(s));
        break;
      }
      case LaunchTag::kSandboxDir:
        if (!once(&seen_dir, "sandbox_dir") ||
            !read_string(v, &req.sandbox_dir, "sandbox_dir", step, &st)) {
          return st;
        }
        break;
      case LaunchTag::kNetns: {
        if (req.netns) return bad(step, EPROTO, "duplicate netns");
        std::string s;
        if (!read_string(v, &s, "netns", step, &st)) return st;
        req.netns = std::move(s);
        break;
      }
      case LaunchTag::kLink: {
        if (req.links.size() >= kMaxLinks) return bad(step, E2BIG, "more than 16 links");
        if (v.size() < 2) return bad(step, EPROTO, "truncated link");
        uint16_t name_len = get_u16(v.data());
        if (name_len > v.size() - 2) return bad(step, EPROTO, "link name runs past the field");
        Link link;
        if (!read_string(v.subspan(2, name_len), &link.name, "link name", step, &st) ||
            !read_string(v.subspan(2 + name_len), &link.target, "link target", step, &st)) {
          return st;
        }
        req.links.push_back(std::move(link));
        break;
      }
      case LaunchTag::kFlags: {
        uint32_t flags;
        if (!once(&seen_flags, "flags") || !read_u32(v, &flags, "flags", step, &st)) return st;
        if (flags & ~kKnownFlags) return bad(step, EPROTO, "unknown flag bits");
        req.pid_namespace = flags & kFlagPidNamespace;
        req.propagation_slave = flags & kFlagPropagationSlave;
        req.files = flags & kFlagFiles;
        req.jail = flags & kFlagJail;
        if (req.jail && !req.files) return bad(step, EPROTO, "the jail flag without files");
        break;
      }
      case LaunchTag::kPassFd: {
        if (req.pass_fd_targets.size() >= kMaxPassedFds) {
          return bad(step, E2BIG, "more than 16 passed fds");
        }
        uint32_t target;
        if (!read_u32(v, &target, "pass_fd", step, &st)) return st;
        if (target < kMinPassedFdTarget || target > kMaxPassedFdTarget) {
          return bad(step, EPROTO, "pass_fd target outside 4..255");
        }
        for (int t : req.pass_fd_targets) {
          if (t == static_cast<int>(target)) return bad(step, EPROTO, "duplicate pass_fd target");
        }
        req.pass_fd_targets.push_back(static_cast<int>(target));
        break;
      }
      case LaunchTag::kDevice:
      case LaunchTag::kReadOnly:
      case LaunchTag::kReadWrite: {
        const auto t = static_cast<LaunchTag>(tag);
        auto& list = t == LaunchTag::kDevice     ? req.devices
                     : t == LaunchTag::kReadOnly ? req.read_only
                                                 : req.read_write;
        const size_t limit = t == LaunchTag::kDevice     ? kMaxDevices
                             : t == LaunchTag::kReadOnly ? kMaxReadOnly
                                                         : kMaxReadWrite;
        const char* what = t == LaunchTag::kDevice     ? "device"
                           : t == LaunchTag::kReadOnly ? "read_only"
                                                       : "read_write";
        if (list.size() >= limit) {
          return bad(step, E2BIG, "more than " + std::to_string(limit) + " " + what + " entries");
        }
        std::string s;
        if (!read_string(v, &s, what, step, &st)) return st;
        list.push_back(std::move(s));
        break;
      }
      case LaunchTag::kApiSocketDir: {
        if (req.api_socket_dir) return bad(step, EPROTO, "duplicate api_socket_dir");
        std::string s;
        if (!read_string(v, &s, "api_socket_dir", step, &st)) return st;
        req.api_socket_dir = std::move(s);
        break;
      }
      default:
        return bad(step, EPROTO, "unknown launch tag " + std::to_string(tag));
    }
  }
  if (!seen_id) return bad(step, EPROTO, "missing id");
  if (!seen_vmm) return bad(step, EPROTO, "missing vmm");
  if (!seen_dir) return bad(step, EPROTO, "missing sandbox_dir");
  if (!req.files && (!req.devices.empty() || !req.read_only.empty() || !req.read_write.empty() ||
                     req.api_socket_dir)) {
    return bad(step, EPROTO, "files entries without the files flag");
  }
  return Message(std::move(req));
}

Result<Message> decode_error(std::span<const uint8_t> body, Step step) {
  ErrorReport rep;
  Reader r(body, step);
  Status st;
  bool seen_step = false, seen_errno = false, seen_detail = false;
  while (!r.done()) {
    uint16_t tag;
    std::span<const uint8_t> v;
    if (!r.next(&tag, &v)) return r.status();
    switch (static_cast<ErrorTag>(tag)) {
      case ErrorTag::kStep: {
        if (seen_step) return bad(step, EPROTO, "duplicate step");
        seen_step = true;
        if (v.size() != 2) return bad(step, EPROTO, "step must be 2 bytes");
        auto s = step_from_code(get_u16(v.data()));
        if (!s) return bad(step, EPROTO, "unknown step code");
        rep.step = *s;
        break;
      }
      case ErrorTag::kErrno: {
        if (seen_errno) return bad(step, EPROTO, "duplicate errno");
        seen_errno = true;
        uint32_t e;
        if (!read_u32(v, &e, "errno", step, &st)) return st;
        if (e > 4095) return bad(step, EPROTO, "errno out of range");
        rep.err = static_cast<int>(e);
        break;
      }
      case ErrorTag::kDetail:
        if (seen_detail) return bad(step, EPROTO, "duplicate detail");
        seen_detail = true;
        if (!read_string(v, &rep.detail, "detail", step, &st)) return st;
        break;
      default:
        return bad(step, EPROTO, "unknown error tag " + std::to_string(tag));
    }
  }
  if (!seen_step || !seen_errno) return bad(step, EPROTO, "error report without step or errno");
  return Message(std::move(rep));
}

// A message whose body is exactly one u32 field, `tag`, within [min, max].
Result<uint32_t> decode_one_u32(std::span<const uint8_t> body, Step step, uint16_t want,
                                const std::string& name, uint32_t min, uint32_t max) {
  Reader r(body, step);
  Status st;
  std::optional<uint32_t> value;
  while (!r.done()) {
    uint16_t tag;
    std::span<const uint8_t> v;
    if (!r.next(&tag, &v)) return r.status();
    if (tag != want)
      return bad(step, EPROTO, "unknown tag " + std::to_string(tag) + " with " + name);
    if (value) return bad(step, EPROTO, "duplicate " + name);
    uint32_t x;
    if (!read_u32(v, &x, name.c_str(), step, &st)) return st;
    if (x < min || x > max) return bad(step, EPROTO, name + " out of range");
    value = x;
  }
  if (!value) return bad(step, EPROTO, "missing " + name);
  return *value;
}

Result<Message> decode_pid(std::span<const uint8_t> body, Step step) {
  auto pid = decode_one_u32(body, step, static_cast<uint16_t>(PidTag::kPid), "pid", 2, 0x3fffffff);
  if (!pid.ok()) return pid.status();
  return Message(PidReport{static_cast<pid_t>(pid.value())});
}

Result<Message> decode_vmm_exit(std::span<const uint8_t> body, Step step) {
  auto status =
      decode_one_u32(body, step, static_cast<uint16_t>(VmmExitTag::kStatus), "status", 0, 0xffff);
  if (!status.ok()) return status.status();
  return Message(VmmExit{status.value()});
}

Result<Message> decode_confinement(std::span<const uint8_t> body, Step step) {
  auto abi = decode_one_u32(body, step, static_cast<uint16_t>(ConfinementTag::kLandlockAbi),
                            "landlock_abi", 0, 255);
  if (!abi.ok()) return abi.status();
  return Message(ConfinementReport{abi.value()});
}

}  // namespace

Result<std::vector<uint8_t>> encode(const LaunchRequest& req) {
  auto too_big = [](const std::string& what) {
    return Status(Step::kValidateRequest, E2BIG, what + " is over the protocol limit");
  };
  auto check = [](const std::string& s) {
    return s.size() <= kMaxStringSize && s.find('\0') == std::string::npos;
  };
  if (!check(req.id)) return too_big("id");
  if (!check(req.vmm)) return too_big("vmm");
  if (!check(req.sandbox_dir)) return too_big("sandbox_dir");
  if (req.netns && !check(*req.netns)) return too_big("netns");
  if (req.args.size() > kMaxArgs) return too_big("args count");
  if (req.env.size() > kMaxEnv) return too_big("env count");
  if (req.links.size() > kMaxLinks) return too_big("links count");
  if (req.pass_fd_targets.size() > kMaxPassedFds) return too_big("pass_fd count");
  if (req.devices.size() > kMaxDevices) return too_big("files.devices count");
  if (req.read_only.size() > kMaxReadOnly) return too_big("files.read_only count");
  if (req.read_write.size() > kMaxReadWrite) return too_big("files.read_write count");
  if (req.jail && !req.files) {
    return Status(Step::kValidateRequest, EINVAL, "a jail without files");
  }
  if (!req.files && (!req.devices.empty() || !req.read_only.empty() || !req.read_write.empty() ||
                     req.api_socket_dir)) {
    return Status(Step::kValidateRequest, EINVAL, "files entries without the files flag");
  }
  Writer w(MessageType::kLaunch);
  w.string(static_cast<uint16_t>(LaunchTag::kId), req.id);
  w.string(static_cast<uint16_t>(LaunchTag::kVmm), req.vmm);
  for (const auto& a : req.args) {
    if (!check(a)) return too_big("an arg");
    w.string(static_cast<uint16_t>(LaunchTag::kArg), a);
  }
  for (const auto& e : req.env) {
    if (!check(e)) return too_big("an env entry");
    w.string(static_cast<uint16_t>(LaunchTag::kEnv), e);
  }
  w.string(static_cast<uint16_t>(LaunchTag::kSandboxDir), req.sandbox_dir);
  if (req.netns) w.string(static_cast<uint16_t>(LaunchTag::kNetns), *req.netns);
  for (const auto& l : req.links) {
    if (!check(l.name) || !check(l.target)) return too_big("a link");
    std::vector<uint8_t> v;
    put_u16(v, static_cast<uint16_t>(l.name.size()));
    v.insert(v.end(), l.name.begin(), l.name.end());
    v.insert(v.end(), l.target.begin(), l.target.end());
    w.field(static_cast<uint16_t>(LaunchTag::kLink), v);
  }
  const std::pair<LaunchTag, const std::vector<std::string>*> lists[] = {
      {LaunchTag::kDevice, &req.devices},
      {LaunchTag::kReadOnly, &req.read_only},
      {LaunchTag::kReadWrite, &req.read_write}};
  for (const auto& [tag, list] : lists) {
    for (const auto& entry : *list) {
      if (!check(entry)) return too_big("a files entry");
      w.string(static_cast<uint16_t>(tag), entry);
    }
  }
  if (req.api_socket_dir) {
    if (!check(*req.api_socket_dir)) return too_big("api_socket_dir");
    w.string(static_cast<uint16_t>(LaunchTag::kApiSocketDir), *req.api_socket_dir);
  }
  uint32_t flags = (req.pid_namespace ? kFlagPidNamespace : 0) |
                   (req.propagation_slave ? kFlagPropagationSlave : 0) |
                   (req.files ? kFlagFiles : 0) | (req.jail ? kFlagJail : 0);
  if (flags != 0) w.u32(static_cast<uint16_t>(LaunchTag::kFlags), flags);
  for (int t : req.pass_fd_targets) w.u32(static_cast<uint16_t>(LaunchTag::kPassFd), t);
  auto out = w.finish();
  if (out.size() > kMaxMessageSize) return too_big("the launch message");
  return out;
}

std::vector<uint8_t> encode(const ErrorReport& rep) {
  Writer w(MessageType::kError);
  uint8_t step[2] = {static_cast<uint8_t>(static_cast<uint16_t>(rep.step)),
                     static_cast<uint8_t>(static_cast<uint16_t>(rep.step) >> 8)};
  w.field(static_cast<uint16_t>(ErrorTag::kStep), step);
  w.u32(static_cast<uint16_t>(ErrorTag::kErrno), static_cast<uint32_t>(rep.err));
  std::string_view detail = rep.detail;
  if (detail.size() > kMaxStringSize) detail = detail.substr(0, kMaxStringSize);
  if (size_t nul = detail.find('\0'); nul != std::string_view::npos) detail = detail.substr(0, nul);
  w.string(static_cast<uint16_t>(ErrorTag::kDetail), detail);
  return w.finish();
}

std::vector<uint8_t> encode(const PidReport& rep) {
  Writer w(MessageType::kPidReport);
  w.u32(static_cast<uint16_t>(PidTag::kPid), static_cast<uint32_t>(rep.pid));
  return w.finish();
}

std::vector<uint8_t> encode(const ConfinementReport& rep) {
  Writer w(MessageType::kConfinement);
  w.u32(static_cast<uint16_t>(ConfinementTag::kLandlockAbi), rep.landlock_abi);
  return w.finish();
}

std::vector<uint8_t> encode(const VmmStarted&) {
  return Writer(MessageType::kVmmStarted).finish();
}

std::vector<uint8_t> encode(const VmmExit& rep) {
  Writer w(MessageType::kVmmExit);
  w.u32(static_cast<uint16_t>(VmmExitTag::kStatus), rep.status);
  return w.finish();
}

std::vector<uint8_t> encode(const StartedAck&) {
  return Writer(MessageType::kStartedAck).finish();
}

void patch_u32(std::span<uint8_t> bytes, size_t offset, uint32_t value) {
  if (offset > bytes.size() || bytes.size() - offset < 4) return;
  for (int i = 0; i < 4; ++i) bytes[offset + i] = static_cast<uint8_t>(value >> (8 * i));
}

Result<Message> decode(std::span<const uint8_t> bytes, Step step) {
  if (bytes.size() > kMaxMessageSize) return bad(step, EMSGSIZE, "message over 64 KiB");
  if (bytes.size() < kHeaderSize) return bad(step, EPROTO, "truncated header");
  if (get_u32(bytes.data()) != kMagic) return bad(step, EPROTO, "bad magic");
  if (get_u16(bytes.data() + 4) != kVersion) return bad(step, EPROTO, "unknown version");
  uint16_t type = get_u16(bytes.data() + 6);
  if (get_u32(bytes.data() + 8) != bytes.size()) return bad(step, EPROTO, "length mismatch");
  if (get_u32(bytes.data() + 12) != 0) return bad(step, EPROTO, "reserved bits set");
  auto body = bytes.subspan(kHeaderSize);
  switch (static_cast<MessageType>(type)) {
    case MessageType::kLaunch:
      return decode_launch(body, step);
    case MessageType::kError:
      return decode_error(body, step);
    case MessageType::kPidReport:
      return decode_pid(body, step);
    case MessageType::kConfinement:
      return decode_confinement(body, step);
    case MessageType::kVmmStarted:
      if (!body.empty()) return bad(step, EPROTO, "VMM_STARTED carries no fields");
      return Message(VmmStarted{});
    case MessageType::kVmmExit:
      return decode_vmm_exit(body, step);
    case MessageType::kStartedAck:
      if (!body.empty()) return bad(step, EPROTO, "STARTED_ACK carries no fields");
      return Message(StartedAck{});
  }
  return bad(step, EPROTO, "unknown message type " + std::to_string(type));
}

Status send_datagram(int sock, std::span<const uint8_t> bytes, std::span<const int> fds,
                     Step step) {
  if (fds.size() > kMaxPassedFds) return Status(step, E2BIG, "too many fds to send");
  iovec iov{const_cast<uint8_t*>(bytes.data()), bytes.size()};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxPassedFds)];
  if (!fds.empty()) {
    msg.msg_control = control;
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
    std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
  }
  ssize_t n;
  do {
    n = sendmsg(sock, &msg, MSG_NOSIGNAL);
  } while (n < 0 && errno == EINTR);
  if (n < 0) return Status(step, errno, "sendmsg on the control socket");
  if (static_cast<size_t>(n) != bytes.size()) return Status(step, EIO, "short sendmsg");
  return {};
}

Result<Datagram> receive_datagram(int sock, int timeout_ms, size_t max_fds, Step step) {
  pollfd pfd{sock, POLLIN, 0};
  int pr;
  do {
    pr = poll(&pfd, 1, timeout_ms);
  } while (pr < 0 && errno == EINTR);
  if (pr < 0) return Status(step, errno, "poll on the control socket");
  if (pr == 0) return Status(step, ETIMEDOUT, "no message on the control socket in time");

  Datagram d;
  // Left uninitialised: recvmsg writes only the message's own pages, where zero-filling the
  // whole 64 KiB touched sixteen (measured in bench/). One spare byte: a full buffer means
  // oversize.
  std::unique_ptr<uint8_t[]> buf(new uint8_t[kMaxMessageSize + 1]);
  iovec iov{buf.get(), kMaxMessageSize + 1};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxPassedFds)];
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof(control);
  ssize_t n;
  do {
    n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC | MSG_TRUNC);
  } while (n < 0 && errno == EINTR);
  if (n < 0) return Status(step, errno, "recvmsg on the control socket");

  // Take ownership of every fd that arrived before judging the message, so none leaks.
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
      size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      for (size_t i = 0; i < count; ++i) {
        int fd;
        std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
        d.fds.emplace_back(fd);
      }
    } else {
      return bad(step, EPROTO, "unexpected control message");
    }
  }
  if (msg.msg_flags & MSG_CTRUNC) return bad(step, EPROTO, "control data truncated");
  if (d.fds.size() > max_fds) return bad(step, EPROTO, "too many fds with the message");
  if (n == 0) {
    d.bytes.clear();
    d.eof = d.fds.empty();
    if (!d.eof) return bad(step, EPROTO, "empty message with fds");
    return d;
  }
  if (static_cast<size_t>(n) > kMaxMessageSize || (msg.msg_flags & MSG_TRUNC)) {
    return bad(step, EMSGSIZE, "message over 64 KiB");
  }
  d.bytes.assign(buf.get(), buf.get() + n);
  return d;
}

}  // namespace sbx::protocol
