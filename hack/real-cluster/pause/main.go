// Command pause is the sandbox (infra) container of the real test cluster:
// it holds a pod's namespaces open, reaps the zombies it inherits as PID 1,
// and exits on SIGINT or SIGTERM. The upstream pause image cannot be pulled
// where no registry is reachable, so the cluster scripts build this one.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for sig := range signals {
		if sig != syscall.SIGCHLD {
			return
		}
		for {
			pid, err := syscall.Wait4(-1, nil, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
