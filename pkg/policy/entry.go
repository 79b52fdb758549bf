package policy

import (
	"errors"
	"fmt"
	"regexp"
	"strings"

	"github.com/distribution/reference"
)

// Docker Hub's canonical and legacy registry hosts. The reference parser
// maps a leading "index.docker.io/" to "docker.io/" only when it is written in
// lower case, so matching applies the same mapping after folding case.
const (
	dockerHub       = "docker.io"
	legacyDockerHub = "index.docker.io"
)

// anchoredDomain accepts exactly what the reference grammar accepts as a
// registry host[:port], so an entry can name every registry an image can.
var anchoredDomain = regexp.MustCompile(`^` + reference.DomainRegexp.String() + `$`)

// RegistryEntry is one parsed registry whitelist entry: either a whole
// registry (host[:port]) or a repository path on a registry together with
// everything below it.
type RegistryEntry struct {
	// Raw is the entry as the operator wrote it, used in messages.
	Raw string
	// Domain is the normalised registry host[:port], lower case.
	Domain string
	// Path is the repository path the entry is restricted to; empty means
	// the whole registry.
	Path string
}

// String returns the normalised form of the entry.
func (e RegistryEntry) String() string {
	if e.Path == "" {
		return e.Domain
	}
	return e.Domain + "/" + e.Path
}

// Matches reports whether a normalised repository (domain and path as
// returned by [reference.Domain] and [reference.Path]) is covered by the
// entry. Domains compare exactly after case folding; paths match the entry's
// path itself or anything below it, on "/" boundaries only.
func (e RegistryEntry) Matches(domain, path string) bool {
	if canonicalDomain(domain) != e.Domain {
		return false
	}
	if e.Path == "" || path == e.Path {
		return true
	}
	return len(path) > len(e.Path) && path[len(e.Path)] == '/' && path[:len(e.Path)] == e.Path
}

// ParseRegistryEntry parses a whitelist entry. An entry without "/" is a
// registry host with an optional port ("registry.my.com", "localhost:5000",
// "[::1]:5000"); an entry with "/" is a repository path, normalised exactly as
// image references are ("docker.io/nginx" is "docker.io/library/nginx").
// Entries carry neither tag nor digest nor URL scheme.
func ParseRegistryEntry(raw string) (RegistryEntry, error) {
	s := strings.TrimSpace(raw)
	switch {
	case s == "":
		return RegistryEntry{}, errors.New("registry entry is empty")
	case strings.Contains(s, "://"):
		return RegistryEntry{}, fmt.Errorf("registry entry %q: drop the URL scheme, write host[:port] or host[:port]/path", raw)
	case strings.ContainsAny(s, "@*"):
		return RegistryEntry{}, fmt.Errorf("registry entry %q: must be host[:port] or host[:port]/path, without wildcard or digest", raw)
	}
	if !strings.Contains(s, "/") {
		if !anchoredDomain.MatchString(s) {
			return RegistryEntry{}, fmt.Errorf("registry entry %q: not a valid registry host[:port]", raw)
		}
		return RegistryEntry{Raw: raw, Domain: canonicalDomain(s)}, nil
	}
	named, err := reference.ParseNormalizedNamed(s)
	if err != nil {
		return RegistryEntry{}, fmt.Errorf("registry entry %q: %w", raw, err)
	}
	if !reference.IsNameOnly(named) {
		return RegistryEntry{}, fmt.Errorf("registry entry %q: must not carry a tag or digest", raw)
	}
	e := RegistryEntry{Raw: raw, Domain: canonicalDomain(reference.Domain(named)), Path: reference.Path(named)}
	// The parser turns "docker.io/x" into "docker.io/library/x", which is
	// right for an image but not for an entry: "docker.io/library" and
	// "docker.io/bitnami" name Docker Hub namespaces. Take a single path
	// component written after an explicit Docker Hub host literally.
	if host, rest, _ := strings.Cut(s, "/"); e.Domain == dockerHub && canonicalDomain(host) == dockerHub && !strings.Contains(rest, "/") {
		e.Path = rest
	}
	return e, nil
}

// canonicalDomain folds a registry host to the form entries are compared
// in: lower case (DNS names are case-insensitive) and Docker Hub's legacy
// host mapped to docker.io.
func canonicalDomain(d string) string {
	d = strings.ToLower(d)
	if d == legacyDockerHub {
		return dockerHub
	}
	return d
}

// lintEntry returns a warning for entries that parse but are probably a
// mistake, or "" when the entry looks deliberate.
func lintEntry(e RegistryEntry) string {
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
