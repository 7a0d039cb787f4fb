package main

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/convoice/convoice/controller"
)

// notifyConfig reads the settings of call history and webhooks (issue 17)
// from the environment: CONVOICE_CDR_RETENTION (a duration such as 9600h,
// or days such as 400d; default 400d) and CONVOICE_WEBHOOK_ALLOW_PRIVATE.
func notifyConfig(reg prometheus.Registerer) (controller.NotifyConfig, error) {
	cfg := controller.NotifyConfig{Registerer: reg}
	keep := env("CONVOICE_CDR_RETENTION", "400d")
	d, err := parseDays(keep)
	if err != nil || d < time.Hour {
		return cfg, fmt.Errorf("CONVOICE_CDR_RETENTION %q: want a duration of at least 1h, like 400d or 720h", keep)
	}
	cfg.CDRRetention = d
	priv := env("CONVOICE_WEBHOOK_ALLOW_PRIVATE", "false")
	if cfg.WebhookAllowPrivate, err = strconv.ParseBool(priv); err != nil {
		return cfg, fmt.Errorf("CONVOICE_WEBHOOK_ALLOW_PRIVATE %q: want true or false", priv)
	}
	return cfg, nil
}

// parseDays is time.ParseDuration that also takes whole days ("400d").
func parseDays(s string) (time.Duration, error) {
	if n, ok := strings.CutSuffix(strings.TrimSpace(s), "d"); ok {
		days, err := strconv.Atoi(n)
		if err != nil || days < 0 {
			return 0, fmt.Errorf("bad days %q", s)
		}
		return time.Duration(days) * 24 * time.Hour, nil
	}
	return time.ParseDuration(s)
}
