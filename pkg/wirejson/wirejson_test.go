package wirejson_test

import (
	stdjson "encoding/json"
	"strings"
	"testing"

	"github.com/imagegate/imagegate/pkg/wirejson"
)

type container struct {
	Name  string `json:"name"`
	Image string `json:"image"`
}

func TestUnmarshal(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		want     container
		wantErr  string
	}{
		{name: "exact names", in: `{"name":"app","image":"nginx:1.25"}`, want: container{"app", "nginx:1.25"}},
		{name: "unknown members ignored", in: `{"name":"app","image":"nginx:1.25","imagePullPolicy":"Always"}`, want: container{"app", "nginx:1.25"}},
		// The apiserver's decoder ignores "Image"; so must we.
		{name: "case differs: not read", in: `{"name":"app","Image":"nginx:1.25"}`, want: container{Name: "app"}},
		{name: "repeated name", in: `{"image":"registry.my.com/app:1","image":"evil.io/app:1"}`, wantErr: "duplicate"},
		{name: "invalid UTF-8", in: "{\"image\":\"a\xffb\"}", wantErr: "UTF-8"},
		{name: "trailing data", in: `{"image":"a"} {}`, wantErr: "invalid"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got container
			err := wirejson.Unmarshal([]byte(tc.in), &got)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestDescribeStdError(t *testing.T) {
	var v container
	err := wirejson.DescribeStdError(stdjson.Unmarshal([]byte(`{"image": x}`), &v))
	if err == nil || !strings.Contains(err.Error(), "(at byte 11)") {
		t.Errorf("syntax error = %v, want its byte offset", err)
	}
	dec := stdjson.NewDecoder(strings.NewReader(""))
	if err := wirejson.DescribeStdError(dec.Decode(&v)); err == nil || err.Error() != "empty body" {
		t.Errorf("empty body = %v, want \"empty body\"", err)
	}
}
