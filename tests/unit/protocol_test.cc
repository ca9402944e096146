// SPDX-License-Identifier: Apache-2.0
// The wire protocol from both ends: encode/decode round trips, then every malformed, truncated,
// oversize and unknown input the decoder must refuse, in memory and over a real socketpair.
#include "common/protocol.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cerrno>
#include <string>
#include <vector>

namespace sbx::protocol {
namespace {

LaunchRequest sample_request() {
  LaunchRequest r;
  r.id = "vm-0001";
  r.vmm = "/usr/bin/firecracker";
  r.args = {"--api-sock", "/run/sbx/vm-0001.sock", ""};
  r.env = {"PATH=/usr/bin", "EMPTY="};
  r.sandbox_dir = "/run/sbx/vm-0001";
  r.netns = "sbx-vm-0001";
  r.links = {{"vmlinux", "/var/lib/sbx/vmlinux"}, {"rootfs.ext4", "/var/lib/sbx/rootfs.ext4"}};
  r.pid_namespace = true;
  r.pass_fd_targets = {4, 9};
  return r;
}

// Hand-built messages for the refusal cases.
struct Builder {
  std::vector<uint8_t> bytes;
  explicit Builder(uint16_t type = 1, uint16_t version = kVersion, uint32_t magic = kMagic) {
    u32(magic);
    u16(version);
    u16(type);
    u32(0);
    u32(0);
  }
  void u16(uint16_t v) {
    bytes.push_back(v & 0xff);
    bytes.push_back(v >> 8);
  }
  void u32(uint32_t v) {
    for (int i = 0; i < 4; ++i) bytes.push_back((v >> (8 * i)) & 0xff);
  }
  Builder& field(uint16_t tag, const std::string& value) {
    u16(tag);
    u32(static_cast<uint32_t>(value.size()));
    bytes.insert(bytes.end(), value.begin(), value.end());
    return *this;
  }
  Builder& field_u32(uint16_t tag, uint32_t v) {
    u16(tag);
    u32(4);
    u32(v);
    return *this;
  }
  Builder& required() { return field(1, "vm").field(2, "/usr/bin/vmm").field(5, "/run/sbx/vm"); }
  std::vector<uint8_t> done() {
    std::vector<uint8_t> out = bytes;
    uint32_t n = static_cast<uint32_t>(out.size());
    for (int i = 0; i < 4; ++i) out[8 + i] = (n >> (8 * i)) & 0xff;
    return out;
  }
};

Status refused(const std::vector<uint8_t>& bytes) {
  auto r = decode(bytes, Step::kReadRequest);
  EXPECT_FALSE(r.ok());
  if (r.ok()) return {};
  EXPECT_EQ(r.status().step(), Step::kReadRequest);
  return r.status();
}

TEST(Protocol, LaunchRoundTrip) {
  auto bytes = encode(sample_request());
  ASSERT_TRUE(bytes.ok());
  auto msg = decode(bytes.value(), Step::kReadRequest);
  ASSERT_TRUE(msg.ok()) << msg.status().message();
  EXPECT_EQ(std::get<LaunchRequest>(msg.value()), sample_request());
}

TEST(Protocol, MinimalLaunchRoundTrip) {
  LaunchRequest r;
  r.id = "a";
  r.vmm = "/v";
  r.sandbox_dir = "/s/a";
  auto bytes = encode(r);
  ASSERT_TRUE(bytes.ok());
  auto msg = decode(bytes.value(), Step::kReadRequest);
  ASSERT_TRUE(msg.ok());
  EXPECT_EQ(std::get<LaunchRequest>(msg.value()), r);
  EXPECT_FALSE(std::get<LaunchRequest>(msg.value()).netns.has_value());
}

TEST(Protocol, ErrorAndPidRoundTrip) {
  ErrorReport e{Step::kJoinNetns, ENOENT, "open /run/netns/x"};
  auto m = decode(encode(e), Step::kReadRequest);
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(std::get<ErrorReport>(m.value()), e);
  PidReport p{4242};
  auto m2 = decode(encode(p), Step::kReadRequest);
  ASSERT_TRUE(m2.ok());
  EXPECT_EQ(std::get<PidReport>(m2.value()), p);
}

TEST(Protocol, ErrorDetailIsTruncatedToTheLimit) {
  ErrorReport e{Step::kExecVmm, EACCES, std::string(10000, 'x')};
  auto m = decode(encode(e), Step::kReadRequest);
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(std::get<ErrorReport>(m.value()).detail.size(), kMaxStringSize);
}

TEST(Protocol, EveryTruncationIsRefused) {
  auto bytes = encode(sample_request()).take();
  for (size_t n = 0; n < bytes.size(); ++n) {
    std::vector<uint8_t> prefix(bytes.begin(), bytes.begin() + n);
    EXPECT_FALSE(decode(prefix, Step::kReadRequest).ok()) << "prefix of " << n << " bytes";
    // Also with the header's length patched to match, so the field parser itself is reached.
    if (n >= kHeaderSize) {
      for (int i = 0; i < 4; ++i) prefix[8 + i] = (n >> (8 * i)) & 0xff;
      auto r = decode(prefix, Step::kReadRequest);
      // A cut exactly between fields leaves a shorter valid message only if no required
      // field is lost; anything cut inside a field must fail.
      if (r.ok()) {
        EXPECT_NE(std::get<LaunchRequest>(r.value()), sample_request());
      }
    }
  }
}

TEST(Protocol, RefusesBadHeader) {
  EXPECT_EQ(refused(Builder(1, kVersion, 0xdeadbeef).required().done()).err(), EPROTO);
  EXPECT_NE(refused(Builder(1, 2).required().done()).detail().find("version"), std::string::npos);
  EXPECT_NE(refused(Builder(0).required().done()).detail().find("type"), std::string::npos);
  EXPECT_NE(refused(Builder(99).required().done()).detail().find("type"), std::string::npos);
  auto reserved = Builder().required().done();
  reserved[12] = 1;
  EXPECT_NE(refused(reserved).detail().find("reserved"), std::string::npos);
  auto longer = Builder().required().done();
  longer[8] += 1;
  EXPECT_NE(refused(longer).detail().find("length"), std::string::npos);
}

TEST(Protocol, RefusesTrailingBytes) {
  auto bytes = Builder().required().done();
  bytes.push_back(0);
  bytes[8] += 1;  // the header counts the extra byte: it is a truncated field
  EXPECT_EQ(refused(bytes).err(), EPROTO);
  auto unpatched = Builder().required().done();
  unpatched.push_back(0);  // the header does not count it: a length mismatch
  EXPECT_EQ(refused(unpatched).err(), EPROTO);
}

TEST(Protocol, RefusesFieldRunningPastTheEnd) {
  Builder b;
  b.required();
  b.u16(3);
  b.u32(1000);  // claims 1000 bytes, has 2
  b.u16(0);
  EXPECT_NE(refused(b.done()).detail().find("runs past"), std::string::npos);
}

TEST(Protocol, RefusesUnknownTags) {
  EXPECT_NE(refused(Builder().required().field(77, "x").done()).detail().find("unknown"),
            std::string::npos);
  EXPECT_FALSE(decode(Builder(2).field(9, "x").done(), Step::kReadRequest).ok());
  EXPECT_FALSE(decode(Builder(3).field(2, "x").done(), Step::kReadRequest).ok());
}

TEST(Protocol, RefusesDuplicatesOfSingleValuedTags) {
  for (uint16_t tag : {1, 2, 5, 6}) {
    EXPECT_NE(refused(Builder().required().field(6, "ns").field(tag, "/dup").done())
                  .detail()
                  .find("duplicate"),
              std::string::npos)
        << "tag " << tag;
  }
  EXPECT_FALSE(
      decode(Builder().required().field_u32(8, 1).field_u32(8, 1).done(), Step::kReadRequest).ok());
  EXPECT_FALSE(
      decode(Builder(3).field_u32(1, 10).field_u32(1, 11).done(), Step::kReadRequest).ok());
}

TEST(Protocol, RefusesMissingRequiredFields) {
  EXPECT_FALSE(decode(Builder().field(2, "/v").field(5, "/s").done(), Step::kReadRequest).ok());
  EXPECT_FALSE(decode(Builder().field(1, "i").field(5, "/s").done(), Step::kReadRequest).ok());
  EXPECT_FALSE(decode(Builder().field(1, "i").field(2, "/v").done(), Step::kReadRequest).ok());
  EXPECT_FALSE(decode(Builder(2).field_u32(2, 1).done(), Step::kReadRequest).ok());
  EXPECT_FALSE(decode(Builder(3).done(), Step::kReadRequest).ok());
}

TEST(Protocol, RefusesOversizeStringsAndNul) {
  EXPECT_EQ(refused(Builder().required().field(3, std::string(4097, 'a')).done()).err(), E2BIG);
  Builder ok;
  ok.required().field(3, std::string(4096, 'a'));
  EXPECT_TRUE(decode(ok.done(), Step::kReadRequest).ok());
  EXPECT_NE(
      refused(Builder().required().field(3, std::string("a\0b", 3)).done()).detail().find("NUL"),
      std::string::npos);
}

TEST(Protocol, RefusesTooManyRepeatedFields) {
  auto many = [](uint16_t tag, size_t n, const std::string& value) {
    Builder b;
    b.required();
    for (size_t i = 0; i < n; ++i) b.field(tag, value);
    return b.done();
  };
  EXPECT_TRUE(decode(many(3, 64, "a"), Step::kReadRequest).ok());
  EXPECT_EQ(refused(many(3, 65, "a")).err(), E2BIG);
  EXPECT_TRUE(decode(many(4, 64, "A=1"), Step::kReadRequest).ok());
  EXPECT_EQ(refused(many(4, 65, "A=1")).err(), E2BIG);
  std::string link = std::string("\x01\x00", 2) + "l/t";
  EXPECT_TRUE(decode(many(7, 16, link), Step::kReadRequest).ok());
  EXPECT_EQ(refused(many(7, 17, link)).err(), E2BIG);
  Builder fds;
  fds.required();
  for (uint32_t i = 0; i < 17; ++i) fds.field_u32(9, 4 + i);
  EXPECT_EQ(refused(fds.done()).err(), E2BIG);
}

TEST(Protocol, RefusesMalformedLinks) {
  EXPECT_FALSE(decode(Builder().required().field(7, "\x05").done(), Step::kReadRequest).ok());
  EXPECT_FALSE(decode(Builder().required().field(7, std::string("\x09\x00", 2) + "ab").done(),
                      Step::kReadRequest)
                   .ok());
}

TEST(Protocol, RefusesBadFlagsAndFdTargets) {
  EXPECT_FALSE(
      decode(Builder().required().field_u32(8, 0x80000000u).done(), Step::kReadRequest).ok());
  EXPECT_FALSE(decode(Builder().required().field(8, "ab").done(), Step::kReadRequest).ok());
  EXPECT_FALSE(decode(Builder().required().field_u32(9, 3).done(), Step::kReadRequest).ok());
  EXPECT_FALSE(decode(Builder().required().field_u32(9, 256).done(), Step::kReadRequest).ok());
  EXPECT_FALSE(
      decode(Builder().required().field_u32(9, 5).field_u32(9, 5).done(), Step::kReadRequest).ok());
}

TEST(Protocol, RefusesBadErrorAndPidValues) {
  Builder unknown_step(2);
  unknown_step.field(1, std::string("\xff\x00", 2)).field_u32(2, 1);
  EXPECT_FALSE(decode(unknown_step.done(), Step::kReadRequest).ok());
  Builder big_errno(2);
  big_errno.field(1, std::string("\x01\x00", 2)).field_u32(2, 100000);
  EXPECT_FALSE(decode(big_errno.done(), Step::kReadRequest).ok());
  EXPECT_FALSE(decode(Builder(3).field_u32(1, 0).done(), Step::kReadRequest).ok());
  EXPECT_FALSE(decode(Builder(3).field_u32(1, 1).done(), Step::kReadRequest).ok());
}

TEST(Protocol, RefusesOversizeInMemory) {
  std::vector<uint8_t> big(kMaxMessageSize + 1, 0);
  EXPECT_EQ(refused(big).err(), EMSGSIZE);
}

TEST(Protocol, EncodeRefusesWhatTheDecoderWould) {
  LaunchRequest r = sample_request();
  r.args.assign(65, "a");
  EXPECT_FALSE(encode(r).ok());
  r = sample_request();
  r.vmm = std::string(4097, 'v');
  EXPECT_FALSE(encode(r).ok());
  r = sample_request();
  r.links.assign(17, {"a", "/b"});
  EXPECT_FALSE(encode(r).ok());
  r = sample_request();
  r.env.assign(20, std::string(4000, 'e'));  // each fine, the whole over 64 KiB
  EXPECT_FALSE(encode(r).ok());
}

// Both ends in one process over a real SOCK_SEQPACKET socketpair.
class ProtocolSocket : public ::testing::Test {
 protected:
  void SetUp() override {
    int sv[2];
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
    a_.reset(sv[0]);
    b_.reset(sv[1]);
  }
  UniqueFd a_, b_;
};

TEST_F(ProtocolSocket, LaunchWithFdsArrivesWhole) {
  UniqueFd f1(open("/dev/null", O_RDONLY | O_CLOEXEC)), f2(open("/", O_RDONLY | O_CLOEXEC));
  auto bytes = encode(sample_request()).take();
  int fds[] = {f1.get(), f2.get()};
  ASSERT_TRUE(send_datagram(a_.get(), bytes, fds, Step::kReadRequest).ok());
  auto d = receive_datagram(b_.get(), 1000, kMaxPassedFds, Step::kReadRequest);
  ASSERT_TRUE(d.ok()) << d.status().message();
  ASSERT_EQ(d.value().fds.size(), 2u);
  EXPECT_EQ(fcntl(d.value().fds[0].get(), F_GETFD), FD_CLOEXEC);
  auto msg = decode(d.value().bytes, Step::kReadRequest);
  ASSERT_TRUE(msg.ok());
  EXPECT_EQ(std::get<LaunchRequest>(msg.value()), sample_request());
}

TEST_F(ProtocolSocket, EofIsReportedAsEof) {
  a_.reset();
  auto d = receive_datagram(b_.get(), 1000, 0, Step::kExecVmm);
  ASSERT_TRUE(d.ok());
  EXPECT_TRUE(d.value().eof);
}

TEST_F(ProtocolSocket, TimeoutIsAnError) {
  auto d = receive_datagram(b_.get(), 50, 0, Step::kReadRequest);
  ASSERT_FALSE(d.ok());
  EXPECT_EQ(d.status().err(), ETIMEDOUT);
}

TEST_F(ProtocolSocket, OversizeDatagramIsRefused) {
  int size = 256 * 1024;
  setsockopt(a_.get(), SOL_SOCKET, SO_SNDBUF, &size, sizeof(size));
  setsockopt(b_.get(), SOL_SOCKET, SO_RCVBUF, &size, sizeof(size));
  std::vector<uint8_t> big(kMaxMessageSize + 100, 0);
  ASSERT_EQ(send(a_.get(), big.data(), big.size(), 0), static_cast<ssize_t>(big.size()));
  auto d = receive_datagram(b_.get(), 1000, 0, Step::kReadRequest);
  ASSERT_FALSE(d.ok());
  EXPECT_EQ(d.status().err(), EMSGSIZE);
}

TEST_F(ProtocolSocket, TooManyFdsAreRefusedAndClosed) {
  UniqueFd f(open("/dev/null", O_RDONLY | O_CLOEXEC));
  int fds[] = {f.get(), f.get(), f.get()};
  auto bytes = encode(sample_request()).take();
  ASSERT_TRUE(send_datagram(a_.get(), bytes, fds, Step::kReadRequest).ok());
  auto d = receive_datagram(b_.get(), 1000, 2, Step::kReadRequest);
  ASSERT_FALSE(d.ok());
  EXPECT_EQ(d.status().err(), EPROTO);
}

TEST_F(ProtocolSocket, FdsOnAnUnexpectedMessageAreCounted) {
  UniqueFd f(open("/dev/null", O_RDONLY | O_CLOEXEC));
  int fds[] = {f.get()};
  ASSERT_TRUE(send_datagram(a_.get(), encode(PidReport{77}), fds, Step::kReadRequest).ok());
  // The supervisor accepts no fds from the helper.
  EXPECT_FALSE(receive_datagram(b_.get(), 1000, 0, Step::kReadRequest).ok());
}

}  // namespace
}  // namespace sbx::protocol

namespace sbx::protocol {
namespace {

LaunchRequest files_request() {
  LaunchRequest r;
  r.id = "vm-files";
  r.vmm = "/usr/bin/qemu-system-x86_64";
  r.sandbox_dir = "/run/sbx/vm-files";
  r.files = true;
  r.devices = {"/dev/kvm", "/dev/net/tun"};
  r.read_only = {"/usr"};
  r.read_write = {"/run/sbx/vm-files.d"};
  r.api_socket_dir = "/run/sbx/vm-files.d";
  return r;
}

TEST(ProtocolFiles, RoundTrip) {
  auto bytes = encode(files_request());
  ASSERT_TRUE(bytes.ok()) << bytes.status().message();
  auto msg = decode(bytes.value(), Step::kReadRequest);
  ASSERT_TRUE(msg.ok()) << msg.status().message();
  EXPECT_EQ(std::get<LaunchRequest>(msg.value()), files_request());
}

TEST(ProtocolFiles, EmptyFilesKeepTheFlag) {
  LaunchRequest r = files_request();
  r.devices.clear();
  r.read_only.clear();
  r.read_write.clear();
  r.api_socket_dir.reset();
  auto bytes = encode(r);
  ASSERT_TRUE(bytes.ok());
  auto msg = decode(bytes.value(), Step::kReadRequest);
  ASSERT_TRUE(msg.ok());
  EXPECT_TRUE(std::get<LaunchRequest>(msg.value()).files);
}

TEST(ProtocolFiles, EntriesWithoutTheFlagAreRefused) {
  LaunchRequest r = files_request();
  r.files = false;
  EXPECT_FALSE(encode(r).ok());
  // Hand-built: a device tag (10) without the files flag.
  auto raw = encode(LaunchRequest{.id = "a", .vmm = "/v", .sandbox_dir = "/s/a"}).take();
  const std::string dev = "/dev/kvm";
  raw.push_back(10);
  raw.push_back(0);
  for (int i = 0; i < 4; ++i) raw.push_back(i == 0 ? static_cast<uint8_t>(dev.size()) : 0);
  raw.insert(raw.end(), dev.begin(), dev.end());
  const uint32_t size = static_cast<uint32_t>(raw.size());
  for (int i = 0; i < 4; ++i) raw[8 + i] = static_cast<uint8_t>(size >> (8 * i));
  auto msg = decode(raw, Step::kReadRequest);
  ASSERT_FALSE(msg.ok());
  EXPECT_NE(msg.status().detail().find("files flag"), std::string::npos) << msg.status().message();
}

TEST(ProtocolFiles, CountsOverTheLimitsAreRefused) {
  LaunchRequest r = files_request();
  r.devices.assign(kMaxDevices + 1, "/dev/kvm");
  EXPECT_FALSE(encode(r).ok());
  r = files_request();
  r.read_only.assign(kMaxReadOnly + 1, "/usr");
  EXPECT_FALSE(encode(r).ok());
  r = files_request();
  r.read_write.assign(kMaxReadWrite + 1, "/run/sbx/x");
  EXPECT_FALSE(encode(r).ok());
}

TEST(ProtocolConfinement, RoundTripAndRange) {
  ConfinementReport c{6};
  auto msg = decode(encode(c), Step::kReadRequest);
  ASSERT_TRUE(msg.ok());
  EXPECT_EQ(std::get<ConfinementReport>(msg.value()), c);
  auto big = encode(ConfinementReport{256});
  EXPECT_FALSE(decode(big, Step::kReadRequest).ok());
}

}  // namespace
}  // namespace sbx::protocol
