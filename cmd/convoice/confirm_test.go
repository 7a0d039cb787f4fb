package main

import (
	"flag"
	"strings"
	"testing"
	"time"

	"github.com/convoice/convoice/controller"
)

// Confirm-to-join defaults to "mobile", key 1, 10 s in all, the driver's
// prompt; each variable is read, and nonsense is refused naming it.
func TestConfig_ConfirmToJoinDefaultsAndVariables(t *testing.T) {
	for _, k := range []string{"CONVOICE_CONFIRM_TO_JOIN", "CONVOICE_CONFIRM_KEY", "CONVOICE_CONFIRM_TIMEOUT", "CONVOICE_CONFIRM_PROMPT"} {
		t.Setenv(k, "")
	}
	cfg, err := loadConfig(flag.NewFlagSet("serve", flag.ContinueOnError), nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := (controller.ConfirmConfig{Mode: "mobile", Key: "1", Timeout: 10 * time.Second}); cfg.Confirm != want {
		t.Fatalf("default confirm %+v, want %+v", cfg.Confirm, want)
	}
	t.Setenv("CONVOICE_CONFIRM_TO_JOIN", "All")
	t.Setenv("CONVOICE_CONFIRM_KEY", "*")
	t.Setenv("CONVOICE_CONFIRM_TIMEOUT", "16s")
	t.Setenv("CONVOICE_CONFIRM_PROMPT", "sound:conf-getpin")
	if cfg, err = loadConfig(flag.NewFlagSet("serve", flag.ContinueOnError), nil); err != nil {
		t.Fatal(err)
	}
	if want := (controller.ConfirmConfig{Mode: "all", Key: "*", Timeout: 16 * time.Second, Prompt: "sound:conf-getpin"}); cfg.Confirm != want {
		t.Fatalf("confirm %+v, want %+v", cfg.Confirm, want)
	}
	for k, v := range map[string]string{
		"CONVOICE_CONFIRM_TO_JOIN": "sometimes",
		"CONVOICE_CONFIRM_KEY":     "#",
		"CONVOICE_CONFIRM_TIMEOUT": "500ms",
		"CONVOICE_CONFIRM_PROMPT":  "file_string://a.wav;hangup",
	} {
		t.Run(k, func(t *testing.T) {
			t.Setenv(k, v)
			if _, err := loadConfig(flag.NewFlagSet("serve", flag.ContinueOnError), nil); err == nil || !strings.Contains(err.Error(), k) {
				t.Fatalf("%s=%q: %v, want an error naming it", k, v, err)
			}
		})
	}
	t.Setenv("CONVOICE_CONFIRM_TIMEOUT", "ten seconds")
	if _, err := loadConfig(flag.NewFlagSet("serve", flag.ContinueOnError), nil); err == nil || !strings.Contains(err.Error(), "CONVOICE_CONFIRM_TIMEOUT") {
		t.Fatalf("CONVOICE_CONFIRM_TIMEOUT=ten seconds: %v", err)
	}
}
