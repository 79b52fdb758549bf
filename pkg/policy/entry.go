package policy

import (
	"fmt"
	"strings"

	"github.com/imagegate/imagegate/pkg/imageref"
)

// RegistryEntry is one parsed registry entry: a whole registry
// (host[:port]), a repository path and everything below it, or a wildcard
// of subdomains. The parsing and matching live in package imageref, which
// the rewrite rules share.
type RegistryEntry = imageref.RegistryEntry

// ParseRegistryEntry parses a whitelist entry (see
// [imageref.ParseRegistryEntry]): "registry.my.com", "localhost:5000",
// "quay.io/prometheus", "docker.io/library"; no wildcard, tag, digest or URL
// scheme.
func ParseRegistryEntry(raw string) (RegistryEntry, error) { return imageref.ParseRegistryEntry(raw) }

// ParseAllowedEntry parses an entry of a policy file's allowedRegistries,
// deniedRepositories or exemptImages list: every form [ParseRegistryEntry]
// takes, plus "*.host[:port][/path]" (see [imageref.ParseAllowedEntry]).
// "*host" without the dot also matches host itself; [Compile] warns about
// it, since it is usually a typo for "*.host".
func ParseAllowedEntry(raw string) (RegistryEntry, error) { return imageref.ParseAllowedEntry(raw) }

// canonicalDomain folds a registry host to the form entries compare in.
func canonicalDomain(d string) string { return imageref.CanonicalDomain(d) }

const dockerHub = imageref.DockerHub

// lintEntry returns a warning for entries that parse but are probably a
// mistake, or "" when the entry looks deliberate.
func lintEntry(e RegistryEntry) string {
	if e.Wildcard {
		if e.Apex {
			return fmt.Sprintf("registry entry %q matches %s itself as well as its subdomains; write %q for subdomains only, or list both %q and %q",
				e.Raw, e.Domain, "*."+e.Domain, e.Domain, "*."+e.Domain)
		}
		return ""
	}
	if e.Domain == dockerHub && e.Path != "" && !strings.Contains(e.Path, "/") && e.Path != "library" {
		return fmt.Sprintf("registry entry %q covers the Docker Hub namespace %s/... only; for the official image write %q",
			e.Raw, e.Path, dockerHub+"/library/"+e.Path)
	}
	if strings.ContainsAny(e.Domain, ".:[") || e.Domain == "localhost" {
		return ""
	}
	// The reference grammar only reads a first component as a registry when
	// it has a dot or a port or is localhost, so "nginx" as an entry can never
	// match: every "nginx/..." image is a Docker Hub repository.
	return fmt.Sprintf("registry entry %q names a host that no image reference can use (%q/... is a Docker Hub repository); write %q for that Docker Hub namespace or a full registry host",
		e.Raw, e.Domain, dockerHub+"/"+e.Domain)
}
