package server_test

import (
	"bytes"
	"encoding/json"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
)

// checkGolden asserts that rec is a JSON reply equal, once indented, to the
// golden file; with -update it rewrites the file first. It returns the
// indented reply for further assertions.
func checkGolden(t *testing.T, rec *httptest.ResponseRecorder, golden string) *bytes.Buffer {
	t.Helper()
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q, want application/json", ct)
	}
	var got bytes.Buffer
	if err := json.Indent(&got, rec.Body.Bytes(), "", "  "); err != nil {
		t.Fatalf("reply is not JSON: %v: %s", err, rec.Body)
	}
	got.WriteByte('\n')
	if *update {
		if err := os.MkdirAll(filepath.Dir(golden), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(golden, got.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if !bytes.Equal(got.Bytes(), want) {
		t.Errorf("reply differs from %s:\ngot:\n%s\nwant:\n%s", golden, got.Bytes(), want)
	}
	return &got
}
