package digest

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
)

// keychain serves the credentials of a Docker config.json (the
// .dockerconfigjson of a kubernetes.io/dockerconfigjson Secret, so one
// mounts as is), anonymous for registries it does not list or without a
// file. It re-reads the file when its modification time or size changes,
// as a Secret volume's update does, keeping the last good credentials when
// the new file does not parse.
type keychain struct {
	path string
	log  *slog.Logger

	mu    sync.Mutex
	mtime time.Time
	size  int64
	auths map[string]authn.AuthConfig // by registry host, see registryKey
}

func newKeychain(path string, log *slog.Logger) (*keychain, error) {
	k := &keychain{path: path, log: log}
	if path == "" {
		return k, nil
	}
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if err := k.load(fi); err != nil {
		return nil, err
	}
	return k, nil
}

// Resolve implements authn.Keychain.
func (k *keychain) Resolve(res authn.Resource) (authn.Authenticator, error) {
	if k.path == "" {
		return authn.Anonymous, nil
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if fi, err := os.Stat(k.path); err != nil {
		k.log.Warn("registry credentials not re-read; keeping the last ones", "file", k.path, "err", err.Error())
	} else if !fi.ModTime().Equal(k.mtime) || fi.Size() != k.size {
		if err := k.load(fi); err != nil {
			k.log.Warn("registry credentials not re-read; keeping the last ones", "file", k.path, "err", err.Error())
		}
	}
	if cfg, ok := k.auths[registryKey(res.RegistryStr())]; ok {
		return authn.FromConfig(cfg), nil
	}
	return authn.Anonymous, nil
}

// load reads the file; the caller holds mu, or owns k.
func (k *keychain) load(fi os.FileInfo) error {
	data, err := os.ReadFile(k.path)
	if err != nil {
		return err
	}
	var file struct {
		Auths map[string]authn.AuthConfig `json:"auths"`
	}
	if err := json.Unmarshal(data, &file); err != nil {
		return fmt.Errorf("%s: not a Docker config.json: %w", k.path, err)
	}
	auths := make(map[string]authn.AuthConfig, len(file.Auths))
	for key, cfg := range file.Auths {
		auths[registryKey(key)] = cfg
	}
	k.auths, k.mtime, k.size = auths, fi.ModTime(), fi.Size()
	return nil
}

// registryKey reduces a config.json key ("https://index.docker.io/v1/",
// "registry.my.com", "https://registry.my.com:5000") to the registry host
// go-containerregistry asks for, lower case.
func registryKey(s string) string {
	s = strings.TrimPrefix(strings.TrimPrefix(s, "https://"), "http://")
	s, _, _ = strings.Cut(s, "/")
	s = strings.ToLower(s)
	if s == "docker.io" || s == "registry-1.docker.io" {
		return name.DefaultRegistry
	}
	return s
}
