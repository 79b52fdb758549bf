// Package version reports the build's version, stamped at link time:
//
//	go build -ldflags "-X github.com/imagegate/imagegate/pkg/version.Version=v0.1.0 \
//	  -X github.com/imagegate/imagegate/pkg/version.Commit=$(git rev-parse HEAD)"
package version

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

// Version and Commit are set with -ldflags -X; a plain go build leaves them
// at their defaults and String falls back to the module build info.
var (
	Version = "dev"
	Commit  = ""
)

// String returns a one-line description of the build.
func String() string {
	v, c := Version, Commit
	if info, ok := debug.ReadBuildInfo(); ok {
		if v == "dev" && info.Main.Version != "" && info.Main.Version != "(devel)" {
			v = info.Main.Version
		}
		for _, s := range info.Settings {
			if s.Key == "vcs.revision" && c == "" {
				c = s.Value
			}
		}
	}
	if c == "" {
		c = "unknown"
	}
	return fmt.Sprintf("imagegate %s (commit %s, %s, %s/%s)", v, c, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}
