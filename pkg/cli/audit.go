package cli

import (
	"fmt"
	"os"

	"github.com/spf13/pflag"

	"github.com/imagegate/imagegate/pkg/audit"
	"github.com/imagegate/imagegate/pkg/config"
)

// audit judges what kubectl says already runs.
func (a *App) audit(args []string) int {
	pc := config.DefaultPolicy()
	if err := pc.ApplyEnv(a.LookupEnv); err != nil {
		fmt.Fprintf(a.Stderr, "imagegate audit: %v\n", err)
		return ExitUsage
	}
	fs := pflag.NewFlagSet("audit", pflag.ContinueOnError)
	pc.AddFlags(fs)
	file := fs.StringP("filename", "f", "", "kubectl's JSON output to audit, or - for standard input (required)")
	output := fs.StringP("output", "o", "table", "table or json")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), `Usage: imagegate audit -f FILE|- [flags]

Report every container whose image the policy finds a violation in, from
what kubectl prints:

  kubectl get pods,deployments,statefulsets,daemonsets,jobs,cronjobs -A -o json \
    | imagegate audit --config policy.yaml -f -

A List, a typed list or a single object; pods and the pod templates of
workloads are judged in their namespace, objects of other kinds are skipped.
Each finding names the namespace, kind/name, container, image, the rule
(policy rule/check), what the policy would do (denied, or admitted by warn
mode or break-glass) and why. With rewrite rules (--registry-mirror, or
rewrites in the policy file) images are judged as the mutating webhook
would rewrite them: the images a rewrite changes are listed apart, with the
checks it fixes, and what stays wrong is a finding naming the rewrite.
Run it before enforcing a policy.
Exit status: 0 no findings, 1 findings, 2 usage error or unreadable input.

Flags:
%s`, fs.FlagUsages())
	}
	if code, ok := a.parse(fs, args); !ok {
		return code
	}
	switch {
	case fs.NArg() > 0:
		fmt.Fprintf(a.Stderr, "imagegate audit: unexpected arguments %q; the objects come from -f\n", fs.Args())
		return ExitUsage
	case *file == "":
		fmt.Fprintln(a.Stderr, "imagegate audit: -f FILE or -f - (standard input) is required")
		return ExitUsage
	case *output != "table" && *output != "json":
		fmt.Fprintf(a.Stderr, "imagegate audit: --output %q: want table or json\n", *output)
		return ExitUsage
	}
	pc.MarkExplicit(fs, a.LookupEnv)
	p, warnings, err := pc.Compile()
	if err != nil {
		fmt.Fprintf(a.Stderr, "imagegate audit: %v\n", err)
		return ExitUsage
	}
	for _, w := range warnings {
		fmt.Fprintf(a.Stderr, "imagegate audit: warning: %s\n", w)
	}
	in := a.Stdin
	if *file != "-" {
		f, err := os.Open(*file)
		if err != nil {
			fmt.Fprintf(a.Stderr, "imagegate audit: %v\n", err)
			return ExitUsage
		}
		defer f.Close()
		in = f
	}
	if in == nil {
		fmt.Fprintln(a.Stderr, "imagegate audit: no standard input")
		return ExitUsage
	}
	rep, err := audit.Audit(p, in)
	if err != nil {
		fmt.Fprintf(a.Stderr, "imagegate audit: %s: %v\n", *file, err)
		return ExitUsage
	}
	if *output == "json" {
		err = rep.WriteJSON(a.Stdout)
	} else {
		err = rep.WriteTable(a.Stdout)
	}
	if err != nil {
		fmt.Fprintf(a.Stderr, "imagegate audit: %v\n", err)
		return ExitUsage
	}
	if len(rep.Findings) > 0 {
		return ExitDenied
	}
	return ExitOK
}
