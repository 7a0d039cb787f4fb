package controller

import (
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// The imports of the controller's parts point one way (README,
// Architecture): api → controller → guests, audio → conversations →
// engine → policy, audit → core → storage. Each folder here may import of
// ours only what it lists; its tests may import more.
var allowedImports = map[string][]string{
	"../api":    {"controller"},
	".":         {"controller/audio", "controller/audit", "controller/conversations", "controller/core", "controller/directory", "controller/engine", "controller/guests", "controller/history", "controller/identity", "controller/policy", "controller/userevents", "controller/webhooks", "pbx", "storage"},
	"guests":    {"controller/audit", "controller/conversations", "controller/core", "controller/engine", "controller/policy", "storage"},
	"audio":     {"controller/audit", "controller/conversations", "controller/core", "controller/engine", "controller/policy", "storage"},
	"identity":  {"controller/audio", "controller/audit", "controller/core", "controller/directory", "storage"},
	"directory": {"controller/audit", "controller/core", "controller/policy", "storage"},
	// Issue 17: the own stream, call history and webhooks read what the
	// others wrote (the log, legs) and sit beside them on core.
	"userevents":    {"controller/core", "storage"},
	"history":       {"controller/core", "storage"},
	"webhooks":      {"controller/core", "storage"},
	"conversations": {"controller/core", "controller/engine", "storage"},
	"engine":        {"controller/audit", "controller/core", "controller/policy", "leg", "pbx", "storage"},
	"audit":         {"controller/core", "storage"},
	"policy":        {"controller/core"},
	"core":          {"storage"},
	// Below the controller: drivers import only the contract and its
	// supervision, emulators nothing of convoice but their phone table and
	// their own scaffolding, storage nothing of ours.
	"../pbx":                         {},
	"../pbx/link":                    {"pbx"},
	"../pbx/asterisk":                {"pbx", "pbx/link"},
	"../pbx/freeswitch":              {"pbx", "pbx/link"},
	"../emulator/emuphone":           {},
	"../emulator/ariemu":             {"emulator/emuphone", "emulator/internal/emuserver"},
	"../emulator/eslemu":             {"emulator/emuphone", "emulator/internal/emuserver"},
	"../emulator/internal/emuserver": {},
	"../storage":                     {"leg"},
	// The leg state table is a leaf: storage derives its live set from
	// it, the engine applies it.
	"../leg": {},
	// The LDAP reader knows LDAP, not convoice: cmd hands what it read to
	// the controller.
	"../ldapsync": {},
}

func TestLayout_ImportsPointOneWay(t *testing.T) {
	const module = "github.com/convoice/convoice/"
	dirs, err := os.ReadDir(".")
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range dirs {
		if _, ok := allowedImports[d.Name()]; d.IsDir() && !ok {
			t.Errorf("controller/%s is not in allowedImports: say what it may import", d.Name())
		}
	}
	for dir, allowed := range allowedImports {
		files, err := filepath.Glob(filepath.Join(dir, "*.go"))
		if err != nil || len(files) == 0 {
			t.Errorf("%s: no Go files (%v)", dir, err)
			continue
		}
		for _, f := range files {
			if strings.HasSuffix(f, "_test.go") {
				continue
			}
			ast, err := parser.ParseFile(token.NewFileSet(), f, nil, parser.ImportsOnly)
			if err != nil {
				t.Fatal(err)
			}
			for _, imp := range ast.Imports {
				path := strings.Trim(imp.Path.Value, `"`)
				ours, found := strings.CutPrefix(path, module)
				if found && !slices.Contains(allowed, ours) {
					t.Errorf("%s imports %s: not one of %v", f, ours, allowed)
				}
			}
		}
	}
}
