# SPDX-License-Identifier: Apache-2.0
# Writes the SHA-256 of the VMM's seccomp program (BPF) as a C string literal to OUT.
file(SHA256 "${BPF}" digest)
file(WRITE "${OUT}.tmp" "\"${digest}\"\n")
file(RENAME "${OUT}.tmp" "${OUT}")
