// SPDX-License-Identifier: Apache-2.0
// The stop ladder's timing, without processes: order, deadlines, and the bound after SIGKILL.
#include "supervisor/stop_ladder.h"

#include <gtest/gtest.h>

namespace sbx::supervisor {
namespace {

TEST(StopLadder, WithoutGracefulRequestTerminatesAtOnceAndKillsAtTheBudget) {
  StopLadder l(1000, 10000, false);
  EXPECT_EQ(l.due(1000), StopAction::kTerminate);
  EXPECT_EQ(l.due(1000), std::nullopt);
  EXPECT_EQ(l.wait_ms(1000), 10000);
  EXPECT_EQ(l.due(10999), std::nullopt);
  EXPECT_FALSE(l.killed());
  EXPECT_EQ(l.due(11000), StopAction::kKill);
  EXPECT_TRUE(l.killed());
  EXPECT_EQ(l.wait_ms(11000), 1000);
  EXPECT_EQ(l.due(11999), std::nullopt);
  EXPECT_EQ(l.due(12000), StopAction::kGiveUp);
  EXPECT_EQ(l.due(99999), std::nullopt);
  EXPECT_EQ(l.wait_ms(99999), -1);
}

TEST(StopLadder, GracefulRequestGetsHalfTheBudgetBeforeSigterm) {
  StopLadder l(0, 4000, true);
  EXPECT_EQ(l.due(0), StopAction::kGracefulRequest);
  EXPECT_EQ(l.wait_ms(0), 2000);
  EXPECT_EQ(l.due(1999), std::nullopt);
  EXPECT_EQ(l.due(2000), StopAction::kTerminate);
  EXPECT_EQ(l.due(4000), StopAction::kKill);
}

TEST(StopLadder, LateWakeUpsYieldEveryActionInOrder) {
  StopLadder l(0, 100, true, 50);
  EXPECT_EQ(l.due(500), StopAction::kGracefulRequest);
  EXPECT_EQ(l.due(500), StopAction::kTerminate);
  EXPECT_EQ(l.due(500), StopAction::kKill);
  EXPECT_EQ(l.due(500), StopAction::kGiveUp);
  EXPECT_EQ(l.due(500), std::nullopt);
}

TEST(StopLadder, ZeroBudgetKillsImmediatelyAfterSigterm) {
  StopLadder l(0, 0, false);
  EXPECT_EQ(l.due(0), StopAction::kTerminate);
  EXPECT_EQ(l.due(0), StopAction::kKill);
  EXPECT_EQ(l.wait_ms(0), 1000);
}

}  // namespace
}  // namespace sbx::supervisor
