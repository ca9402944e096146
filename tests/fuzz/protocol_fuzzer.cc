// SPDX-License-Identifier: Apache-2.0
// libFuzzer target: the wire protocol decoder on arbitrary bytes. Anything it accepts must
// re-encode and decode to the same message (the decoder and encoder agree on the format).
#include <cstdint>
#include <cstdlib>
#include <span>

#include "common/protocol.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  namespace protocol = sbx::protocol;
  auto msg = protocol::decode(std::span<const uint8_t>(data, size), sbx::Step::kReadRequest);
  if (!msg.ok()) return 0;
  if (auto* launch = std::get_if<protocol::LaunchRequest>(&msg.value())) {
    auto again = protocol::encode(*launch);
    if (!again.ok()) std::abort();
    auto round = protocol::decode(again.value(), sbx::Step::kReadRequest);
    if (!round.ok() || std::get<protocol::LaunchRequest>(round.value()) != *launch) std::abort();
  } else if (auto* error = std::get_if<protocol::ErrorReport>(&msg.value())) {
    auto round = protocol::decode(protocol::encode(*error), sbx::Step::kReadRequest);
    if (!round.ok() || std::get<protocol::ErrorReport>(round.value()) != *error) std::abort();
  }
  return 0;
}
