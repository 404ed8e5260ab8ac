// The sandbox ("pause") process of every Pod on the local node: it holds the Pod's
// namespaces open, reaps the zombies it inherits as PID 1, and exits on SIGINT/SIGTERM.
// Built here because no image registry is reachable from the machines this project
// is built on; a static binary in an image of its own is all a sandbox needs.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	signals := make(chan os.Signal, 8)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for s := range signals {
		if s != syscall.SIGCHLD {
			os.Exit(0)
		}
		for {
			var status syscall.WaitStatus
			pid, err := syscall.Wait4(-1, &status, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
