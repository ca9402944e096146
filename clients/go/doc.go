// SPDX-License-Identifier: Apache-2.0

// Package sbx launches and supervises microVM monitors (Firecracker, Cloud Hypervisor, QEMU)
// in sbx sandboxes, as an unprivileged user, through the sbx-supervisor program.
//
// Each sandbox is one `sbx-supervisor run` process, fed a Spec on its standard input. The
// supervisor launches the VMM through the capability helper sbx-nsexec, which checks the
// request against a root-owned policy, and reports the sandbox's life as JSON-lines events
// (started, ready, stopping, exited) on a pipe this package reads:
//
//	sb, err := sbx.Start(ctx, sbx.Spec{
//		ID:         "vm-0001",
//		VMM:        sbx.VMM{Kind: sbx.KindFirecracker, Binary: "/usr/bin/firecracker"},
//		SandboxDir: "/run/sbx/vm-0001",
//		Kernel:     "/var/lib/sbx/images/vmlinux",
//		Rootfs:     "/var/lib/sbx/images/rootfs.ext4",
//		Netns:      "sbx-vm-0001",
//		APISocket:  "/run/sbx/vm-0001.d/api.sock",
//	})
//	var launchErr *sbx.LaunchError
//	if errors.As(err, &launchErr) {
//		// launchErr.Step, .Errno, .Detail, .Field: what was refused; nothing is left.
//	}
//	...
//	status, err := sb.Stop(ctx) // the supervisor's stop ladder; status.Outcome says how it ended
//
// Start returns when the VMM's API socket accepts a connection. Its context bounds the start
// only, never the VM's life. Stop sends the supervisor SIGTERM once; the supervisor runs its
// ladder (the VMM's graceful request, SIGTERM, SIGKILL at the budget) and reaps everything the
// sandbox started. Wait, Exited and Events observe the end from any number of goroutines.
//
// A sandbox started WithStateDir and WithDetach outlives its caller: a manager that restarts
// finds its sandboxes with List and adopts them with Attach, which gives the same *Sandbox
// (events replayed from the first, Stop, Wait, Exited), or a *LostError for one whose
// supervisor was killed. Remove clears the state of a sandbox that ended.
//
// The package uses only the standard library and talks to the supervisor only through its
// command line and its documented events: sbx-supervisor(1) is the reference for both.
package sbx
