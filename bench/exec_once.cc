// SPDX-License-Identifier: Apache-2.0
// A second baseline for launch latency: a static program that only execs its arguments (the
// stub VMM). Spawning it measures what two execs cost on this machine, the least any design
// pays that runs a helper process between the caller and the VMM.
#include <unistd.h>

int main(int argc, char** argv) {
  if (argc < 2) return 2;
  execv(argv[1], argv + 1);
  return 127;
}
