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
	body := rec.Body.Bytes()
	if !bytes.HasSuffix(body, []byte("}\n")) {
		t.Errorf("the reply does not end in a newline, as json.Encoder writes: %q", body[max(0, len(body)-20):])
	}
	return checkGoldenJSON(t, "reply", bytes.TrimSuffix(body, []byte("\n")), golden)
}

// checkGoldenJSON asserts that the JSON document raw (what names it in
// messages) equals, once indented, the golden file; with -update it
// rewrites the file first. It returns the indented document.
func checkGoldenJSON(t *testing.T, what string, raw []byte, golden string) *bytes.Buffer {
	t.Helper()
	var got bytes.Buffer
	if err := json.Indent(&got, raw, "", "  "); err != nil {
		t.Fatalf("%s is not JSON: %v: %s", what, err, raw)
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
		t.Errorf("%s differs from %s:\ngot:\n%s\nwant:\n%s", what, golden, got.Bytes(), want)
	}
	return &got
}
