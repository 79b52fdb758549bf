package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"go.yaml.in/yaml/v3"
	"k8s.io/apimachinery/pkg/api/resource"
)

// shipped is what config/deployment.yaml gives imagegate's container.
type shipped struct {
	limit      int64  // memory limit, bytes
	limitText  string // as written, e.g. "128Mi"
	gomemlimit string // the GOMEMLIMIT the kubelet would set; "" for none
}

// readDeployment reads the memory limit and GOMEMLIMIT of the imagegate
// container, so the suite tests what ships.
func readDeployment(path string) (shipped, error) {
	raw, err := os.ReadFile(path) //nolint:gosec // the Deployment named by -deployment
	if err != nil {
		return shipped{}, err
	}
	type env struct {
		Name      string `yaml:"name"`
		Value     string `yaml:"value"`
		ValueFrom *struct {
			ResourceFieldRef *struct {
				Resource string `yaml:"resource"`
				Divisor  string `yaml:"divisor"`
			} `yaml:"resourceFieldRef"`
		} `yaml:"valueFrom"`
	}
	var d struct {
		Spec struct {
			Template struct {
				Spec struct {
					Containers []struct {
						Name      string `yaml:"name"`
						Env       []env  `yaml:"env"`
						Resources struct {
							Limits map[string]string `yaml:"limits"`
						} `yaml:"resources"`
					} `yaml:"containers"`
				} `yaml:"spec"`
			} `yaml:"template"`
		} `yaml:"spec"`
	}
	if err := yaml.Unmarshal(raw, &d); err != nil {
		return shipped{}, fmt.Errorf("%s: %w", path, err)
	}
	for _, c := range d.Spec.Template.Spec.Containers {
		if c.Name != "imagegate" {
			continue
		}
		s := shipped{limitText: c.Resources.Limits["memory"]}
		q, err := resource.ParseQuantity(s.limitText)
		if err != nil {
			return shipped{}, fmt.Errorf("%s: memory limit %q: %w", path, s.limitText, err)
		}
		s.limit = q.Value()
		for _, e := range c.Env {
			if e.Name != "GOMEMLIMIT" {
				continue
			}
			s.gomemlimit = e.Value
			if e.ValueFrom != nil && e.ValueFrom.ResourceFieldRef != nil && e.ValueFrom.ResourceFieldRef.Resource == "limits.memory" {
				// What the kubelet writes: the limit divided by the divisor, rounded up.
				div := int64(1)
				if t := e.ValueFrom.ResourceFieldRef.Divisor; t != "" {
					dq, err := resource.ParseQuantity(t)
					if err != nil || dq.Value() <= 0 {
						return shipped{}, fmt.Errorf("%s: GOMEMLIMIT divisor %q is not a positive quantity", path, t)
					}
					div = dq.Value()
				}
				s.gomemlimit = strconv.FormatInt(int64(math.Ceil(float64(s.limit)/float64(div))), 10)
			}
		}
		return s, nil
	}
	return shipped{}, fmt.Errorf("%s: no container named imagegate", path)
}

// writeCert writes a throwaway self-signed ECDSA P-256 certificate for
// 127.0.0.1 (as bench.sh uses: an RSA handshake per connection would cost
// the server more than the flood means to) and returns a pool trusting it.
func writeCert(dir string) (certFile, keyFile string, pool *x509.CertPool, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(now.UnixNano()),
		Subject:      pkix.Name{CommonName: "imagegate-stress"},
		NotBefore:    now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true, IsCA: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return "", "", nil, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return "", "", nil, err
	}
	certFile, keyFile = filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		return "", "", nil, err
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return "", "", nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return "", "", nil, err
	}
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool, nil
}

// launch is how every scenario starts imagegate.
type launch struct {
	binary            string
	certFile, keyFile string
	pool              *x509.CertPool
	ship              shipped
}

// process is one running imagegate process.
type process struct {
	cmd     *exec.Cmd
	addr    string // the HTTPS listener, 127.0.0.1:port
	metrics string // http://127.0.0.1:port of the metrics listener
	tls     *tls.Config
	logs    *tail
	done    chan struct{} // closed once the process has exited
	exitErr error
}

// start execs imagegate on two free loopback ports, with the Deployment's
// GOMEMLIMIT and GOMAXPROCS=2, and waits (10 s at most) for /readyz.
// policyFile, when set, is served with --config.
func start(ctx context.Context, l launch, policyFile string) (*process, error) {
	addr, err := freePort()
	if err != nil {
		return nil, err
	}
	maddr, err := freePort()
	if err != nil {
		return nil, err
	}
	args := []string{"serve", "--listen", addr, "--metrics-listen", maddr,
		"--tls-cert-file", l.certFile, "--tls-key-file", l.keyFile,
		"--registry-whitelist", "registry.my.com", "--log-format", "json"}
	if policyFile != "" {
		args = append(args, "--config", policyFile)
	}
	cmd := exec.Command(l.binary, args...) //nolint:gosec // running the binary under test is the point
	cmd.Env = childEnv(l.ship.gomemlimit)
	// The child dies with this program, even if it is killed.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	s := &process{cmd: cmd, addr: addr, metrics: "http://" + maddr, logs: &tail{max: 16 << 10}, done: make(chan struct{}),
		tls: &tls.Config{RootCAs: l.pool, MinVersion: tls.VersionTLS12}}
	cmd.Stdout, cmd.Stderr = s.logs, s.logs
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", l.binary, err)
	}
	go func() { s.exitErr = cmd.Wait(); close(s.done) }()
	if err := s.waitReady(ctx, 10*time.Second); err != nil {
		s.stop()
		return nil, err
	}
	return s, nil
}

func childEnv(gomemlimit string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "GOMEMLIMIT=") && !strings.HasPrefix(kv, "GOMAXPROCS=") {
			env = append(env, kv)
		}
	}
	env = append(env, "GOMAXPROCS=2")
	if gomemlimit != "" {
		env = append(env, "GOMEMLIMIT="+gomemlimit)
	}
	return env
}

// freePort returns a loopback address nothing listens on right now.
func freePort() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

func (s *process) waitReady(ctx context.Context, timeout time.Duration) error {
	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if resp, err := client.Get(s.metrics + "/readyz"); err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-s.done:
			return fmt.Errorf("imagegate exited before it was ready (%v); its log:\n%s", s.exitErr, s.logs)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
	return fmt.Errorf("imagegate not ready after %s; its log:\n%s", timeout, s.logs)
}

func (s *process) alive() bool {
	select {
	case <-s.done:
		return false
	default:
		return true
	}
}

func (s *process) stop() {
	if s.alive() {
		_ = s.cmd.Process.Kill()
	}
	<-s.done
}

// status reads one "kB" field of /proc/PID/status (VmRSS, VmHWM), in bytes.
func (s *process) status(field string) (int64, error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", s.cmd.Process.Pid))
	if err != nil {
		return 0, err
	}
	for line := range strings.Lines(string(raw)) {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("no %s in /proc/%d/status", field, s.cmd.Process.Pid)
}

// sample reads VmRSS every 50 ms until ctx is done and calls over once if
// it reaches ceiling: the flood is then stopped, so a server that does not
// bound its memory cannot take the machine down with it.
func (s *process) sample(ctx context.Context, ceiling int64, over func(rss int64)) {
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.done:
			return
		case <-t.C:
		}
		if rss, err := s.status("VmRSS"); err == nil && rss >= ceiling && over != nil {
			over(rss)
			over = nil
		}
	}
}

// metric sums every series of one metric on /metrics; found is false when
// the metric has no series.
func (s *process) metric(ctx context.Context, name string) (sum float64, found bool, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.metrics+"/metrics", nil)
	if err != nil {
		return 0, false, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, false, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		rest, ok := strings.CutPrefix(line, name)
		if !ok || rest == "" || (rest[0] != ' ' && rest[0] != '{') {
			continue
		}
		v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
		if err != nil {
			return 0, false, fmt.Errorf("metric line %q: %w", line, err)
		}
		sum, found = sum+v, true
	}
	return sum, found, sc.Err()
}

// tail keeps the last bytes a process wrote, to show when it fails; the
// rest (a flood's decision log) is dropped rather than filling a disk.
type tail struct {
	mu  sync.Mutex
	buf []byte
	max int
}

func (t *tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if len(t.buf) > 2*t.max {
		t.buf = append(t.buf[:0], t.buf[len(t.buf)-t.max:]...)
	}
	return len(p), nil
}

func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	b := t.buf[max(0, len(t.buf)-t.max):]
	if i := bytes.IndexByte(b, '\n'); i >= 0 && len(b) == t.max {
		b = b[i+1:] // start at a whole line
	}
	return string(b)
}

// raiseNofile lifts this process's open-file limit (which the child
// inherits) to want, or as far as the hard limit allows, and returns it;
// the error says when it falls short.
func raiseNofile(want uint64) (uint64, error) {
	var r syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r); err != nil {
		return 0, err
	}
	r.Cur = max(r.Cur, min(want, r.Max))
	// Setting it explicitly also makes os/exec hand it to the child as is.
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &r); err != nil {
		return 0, fmt.Errorf("raise RLIMIT_NOFILE to %d: %w", r.Cur, err)
	}
	if r.Cur < want {
		return r.Cur, fmt.Errorf("RLIMIT_NOFILE's hard limit %d is below the %d the idle-http2 flood needs", r.Max, want)
	}
	return r.Cur, nil
}
