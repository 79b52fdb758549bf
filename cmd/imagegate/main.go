// Command imagegate is an image policy backend for the kube-apiserver: it
// decides which container images a cluster may run. See README.md.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/imagegate/imagegate/pkg/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.New().Run(ctx, os.Args[1:])
	stop()
	os.Exit(code)
}
