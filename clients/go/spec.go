// SPDX-License-Identifier: Apache-2.0

package sbx

import (
	"encoding/json"
	"fmt"
	"strconv"
)

// Spec is one sandbox as `sbx-supervisor run` takes it: every key of the spec, with the JSON
// names the supervisor reads (README's "Spec" section and sbx-supervisor(1) are the reference).
//
// Unset optional fields are left out of the JSON, so the supervisor's defaults apply: the
// pointer fields are those whose zero value is itself a valid setting (a stop budget of 0, a
// pid_namespace of false). The supervisor validates the spec; an invalid one fails Start or
// Check with an error naming the field (see SpecError).
type Spec struct {
	// ID names the sandbox: [A-Za-z0-9_.-], 1 to 64 characters. Required.
	ID string `json:"id"`
	// VMM is the monitor to run and how to talk to it. Required.
	VMM VMM `json:"vmm"`
	// Mode is ModeBoot (the default) or ModeRestore.
	Mode Mode `json:"mode,omitempty"`
	// SandboxDir is the VMM's working directory, a tmpfs holding the links to the images: a
	// direct child of a policy sandbox_root. Removed after the VMM exits if the supervisor made
	// it. Required.
	SandboxDir string `json:"sandbox_dir"`
	// Kernel is linked as SandboxDir/vmlinux (boot mode only); beneath a policy image_root.
	Kernel string `json:"kernel,omitempty"`
	// Rootfs is linked as SandboxDir/rootfs.ext4; beneath a policy image_root.
	Rootfs string `json:"rootfs,omitempty"`
	// Snapshot maps link names in SandboxDir to files beneath a policy image_root (restore
	// mode only): what the VMM's later restore request reads.
	Snapshot map[string]string `json:"snapshot,omitempty"`
	// Netns is a network namespace name in /run/netns allowed by the policy; without it the
	// VMM keeps the caller's.
	Netns string `json:"netns,omitempty"`
	// APISocket is the VMM's API socket: required for every kind but KindGeneric. The sandbox
	// is ready when it accepts a connection from the supervisor. With Files or Jail it must be
	// in a per-sandbox directory the caller made directly under a sandbox_root.
	APISocket string `json:"api_socket,omitempty"`
	// StopTimeoutMs is the stop ladder's budget, 0..3600000 (default 10000). WithStopTimeout
	// overrides it for one run.
	StopTimeoutMs *uint32 `json:"stop_timeout_ms,omitempty"`
	// ReadyTimeoutMs bounds the wait for readiness, 1..3600000 (default 5000); past it the
	// supervisor stops the sandbox with why "not_ready".
	ReadyTimeoutMs *uint32 `json:"ready_timeout_ms,omitempty"`
	// PIDNamespace, default true, runs the VMM in a PID namespace of its own under a
	// forwarding init, so nothing it started outlives it. False runs it as the helper's own
	// process (refused with Jail).
	PIDNamespace *bool `json:"pid_namespace,omitempty"`
	// Jail gives the VMM a read-only root holding only what the spec names (see docs/jail.md).
	// It implies Files.
	Jail bool `json:"jail,omitempty"`
	// Env is the VMM's whole environment (nil: an empty one); LD_*, GCONV_* and
	// non-portable names are refused.
	Env map[string]string `json:"env,omitempty"`
	// Stdio is StdioInherit (the default: the VMM writes where the supervisor's logs go, see
	// WithLogOutput) or StdioNull.
	Stdio Stdio `json:"stdio,omitempty"`
	// Files, when set (an empty Files included), confines the VMM's file access to the
	// sandbox dir, the images, the API socket's directory and these entries.
	Files *Files `json:"files,omitempty"`
	// Cgroup gives the sandbox a cgroup v2 of its own, Parent/ID, with these limits.
	Cgroup *Cgroup `json:"cgroup,omitempty"`
}

// VMM is the spec's "vmm" object.
type VMM struct {
	// Kind selects the API flag the supervisor adds before Args and the graceful stop request.
	Kind VMMKind `json:"kind"`
	// Binary is the VMM's absolute path; a vmm line of the policy must allow it.
	Binary string `json:"binary"`
	// Args follow the kind's API flag (at most 64 arguments in all).
	Args []string `json:"args,omitempty"`
	// GracefulStop is the stop ladder's first step; empty means GracefulDefault.
	GracefulStop GracefulStop `json:"graceful_stop,omitempty"`
}

// VMMKind is the spec's "vmm.kind".
type VMMKind string

// The VMM kinds and the API flag each gets (sbx-supervisor check prints the whole argv).
const (
	KindFirecracker     VMMKind = "firecracker"      // --api-sock SOCK
	KindCloudHypervisor VMMKind = "cloud-hypervisor" // --api-socket path=SOCK
	KindQEMU            VMMKind = "qemu"             // -qmp unix:SOCK,server=on,wait=off
	KindGeneric         VMMKind = "generic"          // none: Args only
)

// Mode is the spec's "mode".
type Mode string

// The launch modes.
const (
	// ModeBoot links vmlinux and rootfs.ext4 into the sandbox dir.
	ModeBoot Mode = "boot"
	// ModeRestore links rootfs.ext4 and the Snapshot files and starts the VMM bare: the
	// restore itself is the caller's later API request.
	ModeRestore Mode = "restore"
)

// Stdio is the spec's "stdio".
type Stdio string

// Where the VMM's standard streams go.
const (
	StdioInherit Stdio = "inherit"
	StdioNull    Stdio = "null"
)

// GracefulStop is the spec's "vmm.graceful_stop".
type GracefulStop string

// The stop ladder's first step.
const (
	// GracefulDefault sends the kind's own request (Firecracker SendCtrlAltDel, Cloud
	// Hypervisor vmm.shutdown, QEMU quit; none for generic).
	GracefulDefault GracefulStop = "default"
	// GracefulNone goes straight to SIGTERM.
	GracefulNone GracefulStop = "none"
	// GracefulSystemPowerdown sends QEMU's system_powerdown instead of quit (QEMU only).
	GracefulSystemPowerdown GracefulStop = "system_powerdown"
)

// Files is the spec's "files": what the VMM may use besides its sandbox dir, its images and
// its API socket's directory. Each list holds absolute paths, without duplicates.
type Files struct {
	// Devices are character devices beneath /dev named by a policy device line (at most 16).
	Devices []string `json:"devices,omitempty"`
	// ReadOnly entries lie in or beneath a policy read_only path (at most 32); the VMM may
	// read and map them for execution (its libraries and loader).
	ReadOnly []string `json:"read_only,omitempty"`
	// ReadWrite entries are caller-owned directories directly under a sandbox_root (at most 16).
	ReadWrite []string `json:"read_write,omitempty"`
}

// Cgroup is the spec's "cgroup": the sandbox's own cgroup v2, Parent/ID. Each limit is
// written to the kernel file of the same name; an unset one is not written.
type Cgroup struct {
	// Parent is a cgroup2 directory delegated to the caller that holds no process. Empty: the
	// supervisor's --cgroup-parent.
	Parent string `json:"parent,omitempty"`
	// MemoryMax is memory.max, in bytes.
	MemoryMax *Limit `json:"memory_max,omitempty"`
	// MemoryHigh is memory.high, in bytes.
	MemoryHigh *Limit `json:"memory_high,omitempty"`
	// MemorySwapMax is memory.swap.max, in bytes.
	MemorySwapMax *Limit `json:"memory_swap_max,omitempty"`
	// CPUMax is cpu.max: "max" or "QUOTA [PERIOD]" in microseconds, e.g. "50000 100000".
	CPUMax string `json:"cpu_max,omitempty"`
	// CPUWeight is cpu.weight, 1..10000.
	CPUWeight *uint32 `json:"cpu_weight,omitempty"`
	// PidsMax is pids.max, at least 1.
	PidsMax *Limit `json:"pids_max,omitempty"`
	// CpusetCpus is cpuset.cpus, a list such as "2-3,6".
	CpusetCpus string `json:"cpuset_cpus,omitempty"`
	// CpusetMems is cpuset.mems, a list such as "0".
	CpusetMems string `json:"cpuset_mems,omitempty"`
	// IOWeight is io.weight, 1..10000.
	IOWeight *uint32 `json:"io_weight,omitempty"`
}

// Limit is a cgroup count as its kernel file takes it: a number, or no limit ("max").
type Limit struct {
	// Value is the limit when Max is false.
	Value uint64
	// Max means no limit.
	Max bool
}

// LimitOf returns the limit n.
func LimitOf(n uint64) *Limit { return &Limit{Value: n} }

// NoLimit returns the limit "max".
func NoLimit() *Limit { return &Limit{Max: true} }

// String returns the limit as the kernel file shows it.
func (l Limit) String() string {
	if l.Max {
		return "max"
	}
	return strconv.FormatUint(l.Value, 10)
}

// MarshalJSON encodes the limit as the spec takes it: a number or "max".
func (l Limit) MarshalJSON() ([]byte, error) {
	if l.Max {
		return []byte(`"max"`), nil
	}
	return []byte(strconv.FormatUint(l.Value, 10)), nil
}

// UnmarshalJSON decodes a number or "max".
func (l *Limit) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		if s != "max" {
			return fmt.Errorf("sbx: a limit is a number or \"max\", not %q", s)
		}
		*l = Limit{Max: true}
		return nil
	}
	var n uint64
	if err := json.Unmarshal(b, &n); err != nil {
		return fmt.Errorf("sbx: a limit is a number or \"max\": %w", err)
	}
	*l = Limit{Value: n}
	return nil
}

// Ptr returns a pointer to v: the optional spec fields take one, as in
// Spec{PIDNamespace: sbx.Ptr(false), StopTimeoutMs: sbx.Ptr[uint32](2000)}.
func Ptr[T any](v T) *T { return &v }
