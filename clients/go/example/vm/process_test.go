// SPDX-License-Identifier: Apache-2.0

package vm

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	sbx "sbx.dev/sbx/clients/go"
	"sbx.dev/sbx/clients/go/internal/sbxtest"
)

// The guest's console marker: its kernel booted and /init brought eth0 up (tests/vm).
const guestMarker = "SBX-GUEST-READY"

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// The QEMU guest of scripts/demo.sh (Debian's cloud kernel, a busybox initramfs, TCG on the
// microvm machine, a TAP device in the netns), jailed, through startProcess and stop.
func TestStartProcessBootsTheGuestAndStopEndsIt(t *testing.T) {
	env := sbxtest.Load(t)
	id := sbxtest.NewID("qemu")
	// The per-sandbox directory the jail gives QEMU read-write: its QMP socket and console.
	vmDir := filepath.Join(env.Sandboxes, id+".d")
	if err := os.Mkdir(vmDir, 0o700); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(vmDir) })
	console := filepath.Join(vmDir, "console.log")
	initramfs := filepath.Join(env.Images, "initramfs.cpio.gz")
	var logs lockedBuffer
	cfg := &VMConfig{
		SandboxID:        id,
		SandboxDir:       filepath.Join(env.Sandboxes, id),
		KernelPath:       filepath.Join(env.Images, "vmlinuz"),
		NetworkNamespace: env.Netns,
		VMMBin:           env.QEMU,
		SocketPath:       filepath.Join(vmDir, "qmp.sock"),
		VMMKind:          sbx.KindQEMU,
		VMMArgs: []string{"-accel", "tcg", "-icount", "shift=auto", "-machine", "microvm",
			"-m", "256", "-smp", "1", "-nodefaults", "-no-user-config", "-display", "none",
			"-no-reboot", "-serial", "file:" + console,
			"-kernel", "vmlinux", "-initrd", initramfs, "-append", "console=ttyS0 panic=-1",
			"-netdev", "tap,id=n0,ifname=" + env.Tap + ",script=no,downscript=no",
			"-device", "virtio-net-device,netdev=n0"},
		Jail: true,
		Files: &sbx.Files{ReadOnly: []string{"/usr", initramfs}, ReadWrite: []string{vmDir},
			Devices: []string{"/dev/net/tun"}},
		Stdio:        sbx.StdioNull,
		ReadyTimeout: 20 * time.Second,
		Supervisor:   env.Supervisor,
		Helper:       env.Helper,
		LogOutput:    &logs,
	}

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	began := time.Now()
	p, err := startProcess(ctx, cfg)
	if err != nil {
		t.Fatalf("startProcess: %v\nlog:\n%s", err, logs.String())
	}
	t.Cleanup(func() { _ = p.stop() })
	readyAfter := time.Since(began)

	deadline := time.Now().Add(120 * time.Second)
	for {
		b, _ := os.ReadFile(console)
		if bytes.Contains(b, []byte(guestMarker)) {
			break
		}
		select {
		case <-p.exited():
			t.Fatalf("QEMU ended before the guest booted\nconsole:\n%s\nlog:\n%s", b, logs.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s on the console\nconsole:\n%s\nlog:\n%s", guestMarker, b, logs.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	booted := time.Since(began)

	stopBegan := time.Now()
	if err := p.stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
	stopTook := time.Since(stopBegan)
	select {
	case <-p.exited():
	default:
		t.Fatal("exited() not closed after stop")
	}
	st, _ := p.sandbox.Wait(context.Background())
	// QMP quit ends QEMU with 0 at the ladder's first step.
	if st.Outcome != sbx.OutcomeExited || st.Code != 0 || st.StopStep != "graceful_request" {
		t.Errorf("status %+v\nlog:\n%s", st, logs.String())
	}
	if err := p.stop(); err != nil {
		t.Errorf("a second stop: %v", err)
	}
	for _, gone := range []string{cfg.SandboxDir, cfg.SocketPath} {
		if _, err := os.Lstat(gone); !os.IsNotExist(err) {
			t.Errorf("%s left behind: %v", gone, err)
		}
	}
	if strings.Contains(logs.String(), "SIGKILL") {
		t.Errorf("the stop needed SIGKILL:\n%s", logs.String())
	}
	t.Logf("ready %v, guest booted %v, stop %v", readyAfter.Round(time.Millisecond),
		booted.Round(time.Millisecond), stopTook.Round(time.Millisecond))
}

// The restore path starts the VMM bare: only rootfs.ext4 and the snapshot files are linked,
// no kernel. Checked on the plan, since the probe is not a VMM that restores.
func TestStartProcessForRestoreLinksNoKernel(t *testing.T) {
	env := sbxtest.Load(t)
	id := sbxtest.NewID("restore")
	cfg := &VMConfig{
		SandboxID:        id,
		SandboxDir:       filepath.Join(env.Sandboxes, id),
		KernelPath:       filepath.Join(env.Images, "vmlinux"),
		RootfsPath:       filepath.Join(env.Images, "rootfs.ext4"),
		NetworkNamespace: env.Netns,
		VMMBin:           "/usr/bin/cloud-hypervisor",
		SocketPath:       filepath.Join(env.Work, "api-"+id+".sock"),
		Snapshot:         map[string]string{"memory-ranges": filepath.Join(env.Images, "vmlinux")},
	}
	plan, err := sbx.Check(context.Background(), buildSpec(cfg, sbx.ModeRestore),
		sbx.WithSupervisor(env.Supervisor))
	if err != nil {
		t.Fatalf("Check: %v", err)
	}
	want := []string{"/usr/bin/cloud-hypervisor", "--api-socket", "path=" + cfg.SocketPath}
	if strings.Join(plan.Argv, " ") != strings.Join(want, " ") {
		t.Errorf("argv %q, want %q", plan.Argv, want)
	}
	if _, ok := plan.Links["vmlinux"]; ok || plan.Links["rootfs.ext4"] != cfg.RootfsPath ||
		plan.Links["memory-ranges"] == "" {
		t.Errorf("links %v", plan.Links)
	}
	// And it really starts a bare VMM: the probe in restore mode, stopped.
	cfg.VMMBin = env.Probe
	cfg.VMMKind = sbx.KindGeneric
	cfg.SocketPath = ""
	report := filepath.Join(env.Work, "report-"+id+".json")
	cfg.VMMArgs = []string{"--report", report}
	cfg.Supervisor, cfg.Helper, cfg.LogOutput = env.Supervisor, env.Helper, &lockedBuffer{}
	p, err := startProcessForRestore(cfg)
	if err != nil {
		t.Fatalf("startProcessForRestore: %v", err)
	}
	sbxtest.WaitForFile(t, report, 10*time.Second)
	sbxtest.WaitSigterm(t, p.sandbox.PID(), false)
	if err := p.stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
	<-p.exited()
}
