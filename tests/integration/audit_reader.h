// SPDX-License-Identifier: Apache-2.0
// Reading the kernel's audit trail in the privileged tests: the kernel's `enabled` flag set for
// a test's life, and the helper's VIRT_* records read from the audit netlink multicast group
// (docs/audit.md). Shared by the audit suite and the fault matrix.
#pragma once

#include <libaudit.h>
#include <linux/netlink.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <map>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "tests/integration/helper_env.h"

namespace sbx::it {

[[noreturn]] inline void audit_fail_errno(const std::string& what) {
  throw std::runtime_error(what + ": " + std::strerror(errno));
}

// Sets the kernel's audit `enabled` flag for the life of the object and puts back what was
// there. A locked configuration (enabled = 2) is left alone when it already records.
class KernelAuditState {
 public:
  explicit KernelAuditState(uint32_t enabled) {
    fd_ = audit_open();
    if (fd_ < 0)
      audit_fail_errno("audit_open (is CONFIG_AUDIT set and audit not disabled at boot?)");
    previous_ = read_enabled();
    if (previous_ == enabled || (previous_ == 2 && enabled == 1)) return;
    if (previous_ == 2) throw std::runtime_error("kernel audit is locked (enabled = 2)");
    if (audit_set_enabled(fd_, enabled) <= 0) audit_fail_errno("audit_set_enabled");
    changed_ = true;
    if (read_enabled() != enabled) throw std::runtime_error("audit_set_enabled did not take");
  }
  ~KernelAuditState() {
    if (changed_ && audit_set_enabled(fd_, previous_) <= 0) {
      ADD_FAILURE() << "could not restore kernel audit enabled=" << previous_ << ": "
                    << std::strerror(errno);
    }
    audit_close(fd_);
  }
  KernelAuditState(const KernelAuditState&) = delete;
  KernelAuditState& operator=(const KernelAuditState&) = delete;

 private:
  uint32_t read_enabled() {
    if (audit_request_status(fd_) <= 0) audit_fail_errno("audit_request_status");
    const auto deadline = deadline_after(std::chrono::seconds(5));
    while (std::chrono::steady_clock::now() < deadline) {
      pollfd pfd{fd_, POLLIN, 0};
      if (poll(&pfd, 1, 500) <= 0) continue;
      audit_reply rep{};
      if (audit_get_reply(fd_, &rep, GET_REPLY_NONBLOCKING, 0) <= 0) continue;
      if (rep.type == AUDIT_GET) return rep.status->enabled;
    }
    throw std::runtime_error("no AUDIT_GET reply from the kernel");
  }

  int fd_ = -1;
  uint32_t previous_ = 0;
  bool changed_ = false;
};

// One record as the multicast group delivers it:
// "audit(TIME:SERIAL): pid=N uid=N auid=N ses=N [subj=...] msg='BODY'".
struct AuditRecord {
  int type = 0;
  std::string stamp;                          // the kernel's fields before msg=
  std::string body;                           // what the helper sent
  std::map<std::string, std::string> fields;  // the body's fields
  std::map<std::string, std::string> stamp_fields;
  std::vector<std::string> keys;  // the body's keys in order, repeats included
};

inline std::map<std::string, std::string> split_fields(const std::string& text,
                                                       std::vector<std::string>* keys = nullptr) {
  std::map<std::string, std::string> out;
  std::istringstream in(text);
  std::string token;
  while (in >> token) {
    size_t eq = token.find('=');
    std::string key = token.substr(0, eq);
    out[key] = eq == std::string::npos ? "" : token.substr(eq + 1);
    if (keys != nullptr) keys->push_back(key);
  }
  return out;
}

// A member of the audit netlink multicast group (AUDIT_NLGRP_READLOG, needs CAP_AUDIT_READ):
// every record the kernel emits while it exists, with or without auditd.
class AuditListener {
 public:
  AuditListener() {
    fd_ = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_AUDIT);
    if (fd_ < 0) audit_fail_errno("socket NETLINK_AUDIT");
    int size = 4 << 20;
    (void)setsockopt(fd_, SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof(size));
    sockaddr_nl addr{};
    addr.nl_family = AF_NETLINK;
    addr.nl_groups = 1u << (AUDIT_NLGRP_READLOG - 1);
    if (bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
      close(fd_);
      audit_fail_errno("bind the audit multicast group");
    }
  }
  ~AuditListener() { close(fd_); }
  AuditListener(const AuditListener&) = delete;
  AuditListener& operator=(const AuditListener&) = delete;

  // The VIRT_* records whose vm field is `vm_field` (e.g. vm="ID"), read until the
  // VIRT_CONTROL record (the last of a set) arrives or the timeout passes.
  std::vector<AuditRecord> record_set(const std::string& vm_field,
                                      std::chrono::milliseconds timeout = kTimeout) {
    std::vector<AuditRecord> out;
    const auto deadline = deadline_after(timeout);
    while (std::chrono::steady_clock::now() < deadline) {
      for (auto& r : read_available(200)) {
        if (r.fields.count("vm") == 0 || "vm=" + r.fields["vm"] != vm_field) continue;
        out.push_back(r);
        if (r.type == AUDIT_VIRT_CONTROL) return out;
      }
    }
    return out;
  }

 private:
  std::vector<AuditRecord> read_available(int timeout_ms) {
    std::vector<AuditRecord> out;
    pollfd pfd{fd_, POLLIN, 0};
    if (poll(&pfd, 1, timeout_ms) <= 0) return out;
    std::vector<char> buf(MAX_AUDIT_MESSAGE_LENGTH + 1024);
    while (true) {
      ssize_t n = recv(fd_, buf.data(), buf.size(), MSG_DONTWAIT);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && errno == ENOBUFS) continue;  // an overrun drops records, not the socket
      if (n <= 0) break;
      if (static_cast<size_t>(n) < NLMSG_HDRLEN) continue;
      nlmsghdr hdr;
      std::memcpy(&hdr, buf.data(), sizeof(hdr));
      if (hdr.nlmsg_type != AUDIT_VIRT_CONTROL && hdr.nlmsg_type != AUDIT_VIRT_RESOURCE) continue;
      std::string text(buf.data() + NLMSG_HDRLEN, static_cast<size_t>(n) - NLMSG_HDRLEN);
      text = text.substr(0, text.find('\0'));
      size_t msg = text.find(" msg='");
      if (msg == std::string::npos || text.back() != '\'') continue;
      AuditRecord r;
      r.type = hdr.nlmsg_type;
      r.stamp = text.substr(0, msg);
      r.body = text.substr(msg + 6, text.size() - msg - 7);
      r.fields = split_fields(r.body, &r.keys);
      r.stamp_fields = split_fields(r.stamp.substr(r.stamp.find(' ') + 1));
      out.push_back(std::move(r));
    }
    return out;
  }

  int fd_ = -1;
};

}  // namespace sbx::it
