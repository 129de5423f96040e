// Command pause is the sandbox ("pause") container of the local cluster's
// pods: it holds the pod's namespaces and waits for a signal. The local
// cluster cannot pull registry.k8s.io/pause, so it packs this instead.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	<-sig
}
