package api

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"net/http"
	"strings"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// MetricsHandler serves the Prometheus metrics, asking for the metrics
// token when one is configured. Metrics say how many calls, streams and
// failures there are: not for everyone who reaches the API's port.
func (s *Server) MetricsHandler() http.Handler {
	h := promhttp.HandlerFor(s.cfg.Gatherer, promhttp.HandlerOpts{})
	if s.cfg.MetricsTokenHash == "" {
		return h
	}
	want, _ := hex.DecodeString(s.cfg.MetricsTokenHash)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		got := sha256.Sum256([]byte(tok))
		if !ok || subtle.ConstantTimeCompare(got[:], want) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="convoice metrics"`)
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = w.Write([]byte(`{"error":{"code":"unauthorized","message":"/metrics needs the metrics token (CONVOICE_METRICS_TOKEN)"}}` + "\n"))
			return
		}
		h.ServeHTTP(w, r)
	})
}
