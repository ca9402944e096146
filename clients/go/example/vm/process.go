// SPDX-License-Identifier: Apache-2.0

// Package vm is the reference VM manager's launch code (startProcess, startProcessForRestore,
// stop, exited) ported onto package sbx: no shell, no unshare, no root. The VMM is started by
// sbx-supervisor through the sbx-nsexec helper, which checks every path against the host's
// policy and gives the VMM its private mount namespace, tmpfs sandbox dir and links, and
// joins the network namespace: what the reference's bash script did as root, without the
// script.
package vm

import (
	"context"
	"fmt"
	"io"
	"log"
	"os"
	"time"

	sbx "sbx.dev/sbx/clients/go"
)

// VMConfig is the reference's VM configuration: its fields, with the same meaning, and after
// them what sbx adds.
type VMConfig struct {
	SandboxID        string // the sandbox's id: [A-Za-z0-9_.-]{1,64}
	SandboxDir       string // a direct child of a policy sandbox_root; sbx mounts the tmpfs there
	KernelPath       string // linked as SandboxDir/vmlinux (fresh boot)
	RootfsPath       string // linked as SandboxDir/rootfs.ext4
	NetworkNamespace string // a name in /run/netns, where the TAP device is configured
	VMMBin           string // the Cloud Hypervisor launcher's VMM binary
	FirecrackerBin   string // the Firecracker launcher's VMM binary (used when VMMBin is empty)
	SocketPath       string // the VMM's API socket

	// VMMKind is how the supervisor talks to the VMM: by default KindCloudHypervisor with
	// VMMBin, KindFirecracker with FirecrackerBin. The supervisor adds the kind's API flag
	// (--api-socket path=SocketPath, --api-sock SocketPath, QEMU's -qmp).
	VMMKind sbx.VMMKind
	// VMMArgs follow the API flag.
	VMMArgs []string
	// Snapshot maps link names in SandboxDir to snapshot files, for startProcessForRestore.
	Snapshot map[string]string
	// Files and Jail confine the VMM to what it is given (see the sbx README); with either,
	// SocketPath must be in a per-sandbox directory the caller made under a sandbox_root.
	Files *sbx.Files
	Jail  bool
	// Stdio is the VMM's standard streams: inherited (into LogOutput) or null.
	Stdio sbx.Stdio
	// StopTimeout is the stop ladder's budget: the reference's 10 s when zero.
	StopTimeout time.Duration
	// ReadyTimeout bounds the wait for the API socket: the supervisor's 5 s when zero.
	ReadyTimeout time.Duration
	// Supervisor and Helper override the installed sbx-supervisor and sbx-nsexec.
	Supervisor, Helper string
	// LogOutput receives the supervisor's log and an inherited VMM's output: os.Stderr when
	// nil, where the reference sent the VMM's.
	LogOutput io.Writer
}

// process represents a running VMM in its sbx sandbox.
type process struct {
	sandbox *sbx.Sandbox
}

// startProcess launches the VMM in an sbx sandbox and returns once its API socket accepts a
// connection. The helper, not a script, does what the reference's launch sequence did:
//
//  1. a private mount namespace, / made rprivate (plus IPC, cgroup and PID namespaces);
//  2. a size-capped tmpfs at SandboxDir;
//  3. the links SandboxDir/vmlinux and SandboxDir/rootfs.ext4;
//  4. the network namespace NetworkNamespace;
//  5. the VMM executed with its API socket, as the caller, with no capability left.
//
// ctx bounds the startup only: cancelled before the VMM is ready, the sandbox is stopped and
// nothing is left; cancelled later, it has no effect, as the reference intended with its
// background context. A step that fails is named in the returned *sbx.LaunchError.
func startProcess(ctx context.Context, cfg *VMConfig) (*process, error) {
	return launch(ctx, cfg, buildSpec(cfg, sbx.ModeBoot))
}

// startProcessForRestore launches a bare VMM (no kernel link) for a snapshot restore that
// the caller then performs over the API (PUT /vm.restore with memory_restore_mode=OnDemand for
// UFFD lazy paging): only rootfs.ext4 and the Snapshot files are linked.
func startProcessForRestore(cfg *VMConfig) (*process, error) {
	return launch(context.Background(), cfg, buildSpec(cfg, sbx.ModeRestore))
}

func launch(ctx context.Context, cfg *VMConfig, spec sbx.Spec) (*process, error) {
	sb, err := sbx.Start(ctx, spec, cfg.options()...)
	if err != nil {
		return nil, fmt.Errorf("start %s process: %w", spec.VMM.Kind, err)
	}
	log.Printf("%s process started: pid %d, sandbox %s", spec.VMM.Kind, sb.PID(), cfg.SandboxID)
	return &process{sandbox: sb}, nil
}

// buildSpec is what the reference's buildStartScript and buildRestoreScript became: data,
// not a shell script, so no path is ever interpreted.
func buildSpec(cfg *VMConfig, mode sbx.Mode) sbx.Spec {
	kind, binary := cfg.VMMKind, cfg.VMMBin
	if binary == "" {
		binary = cfg.FirecrackerBin
	}
	if kind == "" {
		kind = sbx.KindCloudHypervisor
		if cfg.VMMBin == "" {
			kind = sbx.KindFirecracker
		}
	}
	spec := sbx.Spec{
		ID:         cfg.SandboxID,
		VMM:        sbx.VMM{Kind: kind, Binary: binary, Args: cfg.VMMArgs},
		Mode:       mode,
		SandboxDir: cfg.SandboxDir,
		Rootfs:     cfg.RootfsPath,
		Netns:      cfg.NetworkNamespace,
		APISocket:  cfg.SocketPath,
		Jail:       cfg.Jail,
		Files:      cfg.Files,
		Stdio:      cfg.Stdio,
	}
	if mode == sbx.ModeBoot {
		spec.Kernel = cfg.KernelPath
	} else {
		spec.Snapshot = cfg.Snapshot
	}
	if cfg.ReadyTimeout > 0 {
		spec.ReadyTimeoutMs = sbx.Ptr(uint32(cfg.ReadyTimeout.Milliseconds()))
	}
	return spec
}

func (cfg *VMConfig) options() []sbx.Option {
	stopTimeout := cfg.StopTimeout
	if stopTimeout == 0 {
		stopTimeout = 10 * time.Second // the reference's wait between SIGTERM and SIGKILL
	}
	out := cfg.LogOutput
	if out == nil {
		out = os.Stderr
	}
	opts := []sbx.Option{sbx.WithStopTimeout(stopTimeout), sbx.WithLogOutput(out)}
	if cfg.Supervisor != "" {
		opts = append(opts, sbx.WithSupervisor(cfg.Supervisor))
	}
	if cfg.Helper != "" {
		opts = append(opts, sbx.WithHelper(cfg.Helper))
	}
	return opts
}

// stop stops the VMM with the supervisor's ladder: the VMM's graceful request, SIGTERM, and
// SIGKILL once the budget (10 s by default) is spent. Unlike the reference it never waits
// forever: a VMM not reaped 1 s after SIGKILL is reported lost. It may be called any number of
// times; it returns an error only when the VMM could not be stopped.
func (p *process) stop() error {
	st, err := p.sandbox.Stop(context.Background())
	if err != nil {
		return err
	}
	if st.Outcome == sbx.OutcomeLost {
		return fmt.Errorf("stop %s: %s", st.ID, st.Detail)
	}
	if st.Outcome == sbx.OutcomeKilledAfterTimeout {
		log.Printf("VMM of %s did not exit within its stop budget: killed", st.ID)
	}
	return nil
}

// exited returns a channel that is closed when the VMM has exited and its sandbox is gone.
func (p *process) exited() <-chan struct{} {
	return p.sandbox.Exited()
}
