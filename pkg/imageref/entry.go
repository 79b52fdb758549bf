// Package imageref parses the registry entries imagegate's rules are written
// in ("registry.my.com", "quay.io/prometheus", "*.example.com") and matches
// them against normalised image references, on exact (case-folded) hosts
// and "/" boundaries, never by string prefix. The policy's whitelists and
// the rewrite rules' FROM and TO share it, so an entry means the same
// wherever it is written.
package imageref

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
	// DockerHub is the registry of references without one ("nginx").
	DockerHub = "docker.io"
	// LegacyDockerHub is Docker Hub's old host, the same registry.
	LegacyDockerHub = "index.docker.io"
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
	// Wildcard marks a "*.host[:port][/path]" entry (see
	// [ParseAllowedEntry]): Domain is then the host suffix, with its port,
	// and any subdomain of it matches.
	Wildcard bool
	// Apex, with Wildcard, says the entry was written "*host" without the
	// dot and so also matches the host itself. Matching stays on label
	// boundaries: "*example.com" never matches "badexample.com".
	Apex bool
}

// String returns the normalised form of the entry.
func (e RegistryEntry) String() string {
	d := e.Domain
	switch {
	case e.Wildcard && e.Apex:
		d = "*" + d
	case e.Wildcard:
		d = "*." + d
	}
	if e.Path == "" {
		return d
	}
	return d + "/" + e.Path
}

// Matches reports whether a normalised repository (domain and path as
// returned by [reference.Domain] and [reference.Path]) is covered by the
// entry. Domains compare exactly after case folding; paths match the entry's
// path itself or anything below it, on "/" boundaries only.
func (e RegistryEntry) Matches(domain, path string) bool {
	if !e.MatchesDomain(CanonicalDomain(domain)) {
		return false
	}
	if e.Path == "" || path == e.Path {
		return true
	}
	return len(path) > len(e.Path) && path[len(e.Path)] == '/' && path[:len(e.Path)] == e.Path
}

// MatchesDomain compares a canonical registry host[:port] with the entry's.
// A wildcard matches hosts ending in "." plus its host, on the same port
// (none matches none), and the host itself only when Apex is set.
func (e RegistryEntry) MatchesDomain(d string) bool {
	if !e.Wildcard {
		return d == e.Domain
	}
	host, port := splitPort(d)
	ehost, eport := splitPort(e.Domain)
	if port != eport {
		return false
	}
	if host == ehost {
		return e.Apex
	}
	return len(host) > len(ehost)+1 && host[len(host)-len(ehost)-1] == '.' && host[len(host)-len(ehost):] == ehost
}

// splitPort splits "host:port" into "host" and ":port"; a bracketed IPv6
// host keeps its brackets.
func splitPort(d string) (host, port string) {
	i := strings.LastIndexByte(d, ':')
	if i < 0 || strings.IndexByte(d[i:], ']') >= 0 {
		return d, ""
	}
	return d[:i], d[i:]
}

// ParseAllowedEntry parses an entry of a policy file's allowedRegistries,
// deniedRepositories or exemptImages list: every form [ParseRegistryEntry]
// takes, plus "*.host[:port][/path]", which matches any subdomain of host
// (on that port, below that path) but not host itself. "*host" without the
// dot also matches host itself; the policy warns about it, since it is
// usually a typo for "*.host".
func ParseAllowedEntry(raw string) (RegistryEntry, error) {
	s := strings.TrimSpace(raw)
	rest, ok := strings.CutPrefix(s, "*")
	if !ok {
		return ParseRegistryEntry(raw)
	}
	e := RegistryEntry{Raw: raw, Wildcard: true}
	if r, dot := strings.CutPrefix(rest, "."); dot {
		rest = r
	} else {
		e.Apex = true
	}
	host, path, hasPath := strings.Cut(rest, "/")
	switch {
	case strings.ContainsAny(rest, "*@") || strings.Contains(rest, "://"):
		return RegistryEntry{}, fmt.Errorf("registry entry %q: a wildcard is one leading \"*.\" before a host, as in \"*.example.com\"", raw)
	case !anchoredDomain.MatchString(host) || strings.HasPrefix(host, "["):
		return RegistryEntry{}, fmt.Errorf("registry entry %q: %q is not a registry host[:port]", raw, host)
	}
	if h, _ := splitPort(host); !strings.Contains(h, ".") {
		return RegistryEntry{}, fmt.Errorf("registry entry %q: a wildcard must keep at least two labels (\"*.example.com\", not \"*.com\")", raw)
	}
	e.Domain = CanonicalDomain(host)
	if hasPath {
		named, err := reference.ParseNormalizedNamed(e.Domain + "/" + path)
		if err != nil {
			return RegistryEntry{}, fmt.Errorf("registry entry %q: %w", raw, err)
		}
		if !reference.IsNameOnly(named) {
			return RegistryEntry{}, fmt.Errorf("registry entry %q: must not carry a tag or digest", raw)
		}
		e.Path = reference.Path(named)
	}
	return e, nil
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
		return RegistryEntry{Raw: raw, Domain: CanonicalDomain(s)}, nil
	}
	named, err := reference.ParseNormalizedNamed(s)
	if err != nil {
		return RegistryEntry{}, fmt.Errorf("registry entry %q: %w", raw, err)
	}
	if !reference.IsNameOnly(named) {
		return RegistryEntry{}, fmt.Errorf("registry entry %q: must not carry a tag or digest", raw)
	}
	e := RegistryEntry{Raw: raw, Domain: CanonicalDomain(reference.Domain(named)), Path: reference.Path(named)}
	// The parser turns "docker.io/x" into "docker.io/library/x", which is
	// right for an image but not for an entry: "docker.io/library" and
	// "docker.io/bitnami" name Docker Hub namespaces. Take a single path
	// component written after an explicit Docker Hub host literally.
	if host, rest, _ := strings.Cut(s, "/"); e.Domain == DockerHub && CanonicalDomain(host) == DockerHub && !strings.Contains(rest, "/") {
		e.Path = rest
	}
	return e, nil
}

// CanonicalDomain folds a registry host to the form entries are compared
// in: lower case (DNS names are case-insensitive) and Docker Hub's legacy
// host mapped to docker.io.
func CanonicalDomain(d string) string {
	d = strings.ToLower(d)
	if d == LegacyDockerHub {
		return DockerHub
	}
	return d
}
