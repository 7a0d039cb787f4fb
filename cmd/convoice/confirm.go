package main

import (
	"fmt"
	"time"

	"github.com/convoice/convoice/controller"
)

// confirmFromEnv reads confirm-to-join (env only; README,
// "Confirm-to-join"): CONVOICE_CONFIRM_TO_JOIN (off, mobile or all;
// default mobile), CONVOICE_CONFIRM_KEY (default 1),
// CONVOICE_CONFIRM_TIMEOUT (the whole wait for the key over both prompts;
// default 10s) and CONVOICE_CONFIRM_PROMPT (default: the driver's).
func confirmFromEnv() (controller.ConfirmConfig, error) {
	c := controller.ConfirmConfig{Mode: controller.ConfirmMobile, Key: controller.DefaultConfirmKey,
		Timeout: controller.DefaultConfirmTimeout}
	var err error
	if v := env("CONVOICE_CONFIRM_TO_JOIN", ""); v != "" {
		if c.Mode, err = controller.ParseConfirmMode(v); err != nil {
			return c, fmt.Errorf("CONVOICE_CONFIRM_TO_JOIN %w", err)
		}
	}
	if v := env("CONVOICE_CONFIRM_KEY", ""); v != "" {
		c.Key = v
		if err := (controller.ConfirmConfig{Key: v}).Check(); err != nil {
			return c, fmt.Errorf("CONVOICE_CONFIRM_KEY %w", err)
		}
	}
	if v := env("CONVOICE_CONFIRM_TIMEOUT", ""); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			return c, fmt.Errorf("CONVOICE_CONFIRM_TIMEOUT %q: want a duration like 10s", v)
		}
		if err := (controller.ConfirmConfig{Timeout: d}).Check(); err != nil {
			return c, fmt.Errorf("CONVOICE_CONFIRM_TIMEOUT %w", err)
		}
		c.Timeout = d
	}
	if v := env("CONVOICE_CONFIRM_PROMPT", ""); v != "" {
		if err := (controller.ConfirmConfig{Prompt: v}).Check(); err != nil {
			return c, fmt.Errorf("CONVOICE_CONFIRM_PROMPT %w", err)
		}
		c.Prompt = v
	}
	return c, nil
}
