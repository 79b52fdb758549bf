package policy

import (
	"regexp"
	"slices"
	"strings"
	"unicode/utf8"
)

// Break-glass annotation grammar. The kube-apiserver's ImagePolicyWebhook
// plugin forwards only annotations whose key contains ".image-policy.k8s.io/",
// and the Kubernetes documentation's example is
// "mycluster.image-policy.k8s.io/ticket-1234: break-glass".
const (
	breakGlassSuffix = ".image-policy.k8s.io"
	breakGlassName   = "break-glass"
	breakGlassValue  = "break-glass"
	ticketName       = "ticket"
	expiresName      = "expires"
	// maxTicketLen bounds what an annotation can push into audit logs.
	maxTicketLen = 128
)

var (
	// dnsSubdomain is the Kubernetes annotation-prefix grammar (RFC 1123
	// subdomain, lower case), so look-alike prefixes never qualify.
	dnsSubdomain = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)
	// qualifiedName is the Kubernetes grammar for the name part of a key.
	qualifiedName = regexp.MustCompile(`^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$`)
)

// BreakGlass is a pod's request to override the policy in an emergency.
type BreakGlass struct {
	// Requested is true when at least one annotation asks for break-glass.
	Requested bool
	// Keys are the annotation keys that asked, sorted.
	Keys []string
	// Tickets are the tickets given, sorted and without duplicates.
	Tickets []string
	// Expires are the values of <prefix>.image-policy.k8s.io/expires
	// annotations (RFC 3339 times), unparsed, sorted and without
	// duplicates; every one must hold.
	Expires []string
}

// Ticket joins the tickets with ",", or returns "" when there are none.
func (b BreakGlass) Ticket() string { return strings.Join(b.Tickets, ",") }

func (b BreakGlass) ticketSuffix() string {
	if len(b.Tickets) == 0 {
		return ""
	}
	return " (ticket " + b.Ticket() + ")"
}

// ParseBreakGlass reads a pod's annotations. A pod asks for break-glass with
//
//	<prefix>.image-policy.k8s.io/break-glass: "true"
//
// optionally with <prefix>.image-policy.k8s.io/ticket: "<ticket>", or with
//
//	<prefix>.image-policy.k8s.io/<ticket>: "break-glass"
//
// where <prefix> is a non-empty lower-case DNS subdomain. An optional
// <prefix>.image-policy.k8s.io/expires: "<RFC 3339 time>" bounds the
// request in time (see [BreakGlassOptions.MaxAge]). Anything else, such
// as a bare "image-policy.k8s.io/" key or "x.image-policy.k8s.io.evil.com/",
// is ignored.
func ParseBreakGlass(annotations map[string]string) BreakGlass {
	var b BreakGlass
	var tickets []string
	for key, value := range annotations {
		name, ok := breakGlassKeyName(key)
		if !ok {
			continue
		}
		switch {
		case name == breakGlassName:
			if value == "true" {
				b.Requested = true
				b.Keys = append(b.Keys, key)
			}
		case name == ticketName && value != breakGlassValue:
			if t := strings.TrimSpace(value); t != "" {
				tickets = append(tickets, truncate(t, maxTicketLen))
			}
		case name == expiresName && value != breakGlassValue:
			b.Expires = append(b.Expires, truncate(strings.TrimSpace(value), 64))
		case value == breakGlassValue:
			b.Requested = true
			b.Keys = append(b.Keys, key)
			tickets = append(tickets, name)
		}
	}
	if !b.Requested {
		return BreakGlass{}
	}
	slices.Sort(b.Keys)
	slices.Sort(tickets)
	b.Tickets = slices.Compact(tickets)
	slices.Sort(b.Expires)
	b.Expires = slices.Compact(b.Expires)
	return b
}

// breakGlassKeyName returns the name part of an annotation key whose prefix
// is a valid "<something>.image-policy.k8s.io".
func breakGlassKeyName(key string) (string, bool) {
	prefix, name, ok := strings.Cut(key, "/")
	if !ok || !qualifiedName.MatchString(name) || len(name) > 63 {
		return "", false
	}
	head, ok := strings.CutSuffix(prefix, breakGlassSuffix)
	if !ok || head == "" || len(prefix) > 253 || !dnsSubdomain.MatchString(head) {
		return "", false
	}
	return name, true
}

// truncate cuts s to at most n bytes without splitting a UTF-8 sequence.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "..."
}
