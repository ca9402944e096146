// SPDX-License-Identifier: Apache-2.0
// The Landlock layer's plan per policy mode and kernel ABI: what a launch will apply, decided
// before the audit record is written.
#include <gtest/gtest.h>

#include <cerrno>

#include "helper/landlock.h"

namespace sbx::landlock {
namespace {

TEST(LandlockPlan, OffIsNeverApplied) {
  for (int kernel : {0, 3, 6, 7}) {
    auto p = plan(policy::LandlockMode::kOff, kernel);
    ASSERT_TRUE(p.ok());
    EXPECT_EQ(p.value(), 0);
  }
}

TEST(LandlockPlan, BestEffortTakesWhatTheKernelHasUpToTheLayer) {
  EXPECT_EQ(plan(policy::LandlockMode::kBestEffort, 0).value(), 0);
  EXPECT_EQ(plan(policy::LandlockMode::kBestEffort, 3).value(), 3);
  EXPECT_EQ(plan(policy::LandlockMode::kBestEffort, 6).value(), 6);
  EXPECT_EQ(plan(policy::LandlockMode::kBestEffort, 7).value(), 6);
}

TEST(LandlockPlan, RequiredRefusesAKernelBelowTheLayer) {
  for (int kernel : {0, 1, 5}) {
    auto p = plan(policy::LandlockMode::kRequired, kernel);
    ASSERT_FALSE(p.ok()) << kernel;
    EXPECT_EQ(p.status().step(), Step::kLandlock);
    EXPECT_EQ(p.status().err(), EOPNOTSUPP);
    EXPECT_NE(p.status().detail().find("landlock = required"), std::string::npos);
  }
  EXPECT_EQ(plan(policy::LandlockMode::kRequired, 7).value(), 6);
}

TEST(LandlockPlan, ThisKernelHasTheLayersAbi) {
  // CI runs on a kernel with Landlock ABI >= 6 (docs: the machine's floor for this layer).
  EXPECT_GE(kernel_abi(), kLayerAbi);
}

}  // namespace
}  // namespace sbx::landlock
