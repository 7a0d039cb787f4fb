package api_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"sync"
	"testing"

	"github.com/chromedp/chromedp"

	"github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/runtime"
)

// findChromium finds Debian's chromium (or CONVOICE_CHROMIUM), failing the
// test with the install command when there is none.
func findChromium(t *testing.T) string {
	t.Helper()
	for _, p := range []string{os.Getenv("CONVOICE_CHROMIUM"), "/usr/bin/chromium"} {
		if p == "" {
			continue
		}
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			return p
		}
	}
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Fatalf("the browser tests need Debian's chromium at /usr/bin/chromium (or CONVOICE_CHROMIUM=/path/to/chrome): " +
		"install it with `apt-get update && apt-get install -y chromium`")
	return ""
}

// launchChromium starts one headless chromium with a fresh profile and
// returns its first context; each person gets a browser context of their own
// from it (cookies, storage: like separate people). The flags keep it off
// the network this machine does not have.
func launchChromium(t *testing.T, chromium string, width, height int) context.Context {
	t.Helper()
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromium),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.Headless,
		chromedp.NoSandbox, // root in CI containers
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.Flag("disable-background-timer-throttling", true),
		chromedp.Flag("disable-backgrounding-occluded-windows", true),
		chromedp.Flag("disable-renderer-backgrounding", true),
		chromedp.Flag("disable-features", "Translate,MediaRouter,OptimizationHints"),
		chromedp.Flag("password-store", "basic"),
		chromedp.Flag("use-mock-keychain", true),
		chromedp.Flag("metrics-recording-only", true),
		chromedp.Flag("no-proxy-server", true),
		chromedp.WindowSize(width, height),
	}
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(allocCtx)
	// Cleanups run last-in first-out: the browser stops before the profile
	// dir is removed and before convoice shuts down.
	t.Cleanup(func() { cancel(); cancelAlloc() })
	// The first Run starts the browser; it must not carry a timeout (that
	// would stop the browser when it fires).
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[string](`navigator.userAgent`)); err != nil {
		t.Fatalf("start chromium (%s): %v", chromium, err)
	}
	return ctx
}

// pageProblems collects what a browser page reports that a test must fail
// on: script errors and Content-Security-Policy refusals. Network errors
// are not among them: tests cut connections on purpose.
type pageProblems struct {
	mu   sync.Mutex
	errs []string
}

// onEvent is the chromedp listener that feeds it.
func (p *pageProblems) onEvent(ev any) {
	switch ev := ev.(type) {
	case *runtime.EventExceptionThrown:
		d := ev.ExceptionDetails
		msg := d.Text
		if d.Exception != nil && d.Exception.Description != "" {
			msg = d.Exception.Description
		}
		p.addProblem(fmt.Sprintf("script error: %s (%s:%d)", msg, d.URL, d.LineNumber))
	case *log.EventEntryAdded:
		e := ev.Entry
		if e.Level == log.EntryLevelError && (e.Source == log.EntrySourceSecurity || e.Source == log.EntrySourceJavascript) {
			p.addProblem(fmt.Sprintf("%s: %s", e.Source, e.Text))
		}
	}
}

func (p *pageProblems) addProblem(s string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.errs = append(p.errs, s)
}

func (p *pageProblems) problems() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.errs...)
}
