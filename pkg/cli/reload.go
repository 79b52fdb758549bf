package cli

import (
	"context"
	"log/slog"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"

	"github.com/imagegate/imagegate/pkg/config"
	"github.com/imagegate/imagegate/pkg/metrics"
	"github.com/imagegate/imagegate/pkg/policy"
	"github.com/imagegate/imagegate/pkg/reload"
	"github.com/imagegate/imagegate/pkg/server"
)

// serveWithReload serves while keeping active in step with the policy file:
// on every change of the file and on SIGHUP, a valid new policy is swapped
// in and a broken one is logged, counted and ignored.
func serveWithReload(ctx context.Context, srv *server.Server, pc config.PolicyConfig, active *atomic.Pointer[policy.Policy], rec *metrics.Recorder, log *slog.Logger) error {
	r := &reload.Reloader{
		Path:    pc.File,
		Load:    pc.Compile,
		Active:  active,
		Log:     log,
		Observe: rec.PolicyReloaded,
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := r.Run(ctx, hup); err != nil {
			log.Error("cannot watch the policy file; it is not reloaded until a restart", "file", pc.File, "err", err)
		}
	}()
	err := srv.ListenAndServe(ctx)
	cancel()
	<-done
	return err
}
