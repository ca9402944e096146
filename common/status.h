// SPDX-License-Identifier: Apache-2.0
// Errors as values: a Status is either ok or a failed step with its errno and a short detail.
// Result<T> carries a value or the Status that explains why there is none.
#pragma once

#include <cassert>
#include <optional>
#include <string>
#include <utility>

#include "common/steps.h"

namespace sbx {

class [[nodiscard]] Status {
 public:
  Status() = default;  // ok
  Status(Step step, int err, std::string detail)
      : failed_(true), step_(step), err_(err), detail_(std::move(detail)) {}

  bool ok() const { return !failed_; }
  Step step() const { return step_; }
  int err() const { return err_; }
  const std::string& detail() const { return detail_; }

  // "step: detail: strerror(errno)" for humans.
  std::string message() const;

 private:
  bool failed_ = false;
  Step step_ = Step::kCheckInvocation;
  int err_ = 0;
  std::string detail_;
};

template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : value_(std::move(value)) {}         // NOLINT: implicit by design
  Result(Status status) : status_(std::move(status)) {  // NOLINT: implicit by design
    assert(!status_.ok());
  }

  bool ok() const { return value_.has_value(); }
  const Status& status() const { return status_; }
  T& value() { return *value_; }
  const T& value() const { return *value_; }
  T&& take() { return std::move(*value_); }

 private:
  std::optional<T> value_;
  Status status_;
};

}  // namespace sbx
