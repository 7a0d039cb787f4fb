package api_test

import (
	"strings"
	"testing"

	"github.com/convoice/convoice/api/apitest"
)

// Every page and static file carries the UI's Content-Security-Policy and
// nosniff, join.html by its /static/ address included; the static folder
// is not listed.
func TestStatic_EveryFileCarriesTheCSPAndTheFolderIsNotListed(t *testing.T) {
	env := apitest.Start(t, apitest.Options{NoPBX: true})
	for _, p := range []string{"/static/join.html", "/static/app.js", "/static/style.css", "/static/join.js"} {
		r := env.Do("GET", p, "", nil)
		if r.Status != 200 {
			t.Fatalf("%s: %d", p, r.Status)
		}
		csp := r.Header.Get("Content-Security-Policy")
		if !strings.Contains(csp, "default-src 'self'") || !strings.Contains(csp, "frame-ancestors 'none'") || strings.Contains(csp, "unsafe-inline") {
			t.Errorf("%s: CSP %q", p, csp)
		}
		if r.Header.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("%s: no nosniff", p)
		}
	}
	for _, p := range []string{"/static/", "/static", "/static/nothing.js", "/static/../openapi.yaml"} {
		r := env.Do("GET", p, "", nil)
		if r.Status != 404 && r.Status != 301 {
			t.Errorf("%s: %d %.80s; want 404", p, r.Status, r.Body)
		}
		if strings.Contains(string(r.Body), "app.js") {
			t.Errorf("%s lists the folder: %.200s", p, r.Body)
		}
	}
}
