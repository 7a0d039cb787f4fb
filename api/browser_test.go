package api_test

import (
	"fmt"
	"sync"

	"github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/runtime"
)

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
