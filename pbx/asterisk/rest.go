package asterisk

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/convoice/convoice/pbx"
	"github.com/convoice/convoice/pbx/link"
)

// APIError is a failed ARI request. It keeps what the ari library loses: the
// HTTP status and Asterisk's own message ({"message": …} or, for a failed
// originate, {"error": "Allocation failed"}). Status is 0 when no HTTP
// answer came (connection refused, timeout); Err then holds the transport
// error. Driver methods wrap an APIError together with a pbx sentinel, so
// both errors.Is(err, pbx.ErrRefused) and errors.As(err, &apiErr) work.
type APIError struct {
	Method  string
	Path    string // below the ARI base, e.g. "/channels/leg-1"
	Status  int
	Message string
	Err     error
}

func (e *APIError) Error() string {
	if e.Status == 0 {
		return fmt.Sprintf("ARI %s %s: %v", e.Method, e.Path, e.Err)
	}
	if e.Message == "" {
		return fmt.Sprintf("ARI %s %s: HTTP %d", e.Method, e.Path, e.Status)
	}
	return fmt.Sprintf("ARI %s %s: HTTP %d: %s", e.Method, e.Path, e.Status, e.Message)
}

func (e *APIError) Unwrap() error { return e.Err }

// unavailable reports whether the PBX as a whole could not answer: no HTTP
// answer at all, an auth failure (nothing will work until the configuration
// is fixed), or a gateway/boot error ("Asterisk not booted" is a 503).
func (e *APIError) unavailable() bool {
	switch e.Status {
	case 0, http.StatusUnauthorized, http.StatusForbidden,
		http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return true
	}
	return false
}

// restClient speaks ARI REST with a timeout on every request.
type restClient struct {
	base     string // "http://host:8088/ari", no trailing slash
	user     string
	password string
	timeout  time.Duration
	http     *http.Client

	// answers notes when a booted Asterisk last answered any request:
	// under load the supervisor's own ping may wait behind other requests
	// that are being answered.
	answers *link.Clock
}

// maxRESTConns bounds the REST connections to one Asterisk.
const maxRESTConns = 128

func newRESTClient(base, user, password string, timeout time.Duration, tlsConfig *tls.Config) *restClient {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if tlsConfig != nil {
		tr.TLSClientConfig = tlsConfig.Clone()
	}
	// Keep as many connections as are busy at once under load (every dial
	// is one request, every answered leg two more from the shard
	// workers): with a smaller idle pool, each burst opened new TCP
	// connections and closed them again, a latency spike on the dial
	// path. MaxConnsPerHost keeps a few replicas within the sessionlimit
	// of asterisk-conf/http.conf (500).
	tr.MaxIdleConnsPerHost = maxRESTConns
	tr.MaxConnsPerHost = maxRESTConns
	tr.ResponseHeaderTimeout = timeout
	return &restClient{
		base:     base,
		user:     user,
		password: password,
		timeout:  timeout,
		// No Client.Timeout: every request carries a context deadline
		// (the caller's, bounded by timeout).
		http:    &http.Client{Transport: tr},
		answers: link.NewClock(),
	}
}

// maxBody bounds what we read of an answer (GET /channels on a busy box is
// the largest; 8 MiB is thousands of channels).
const maxBody = 8 << 20

// do sends one request. path is below the base and already escaped; query
// may be nil; body, when not nil, is sent as JSON. A 2xx answer is decoded
// into out when out is not nil and the answer has a body. Any other answer
// is an *APIError.
func (c *restClient) do(ctx context.Context, method, path string, query url.Values, body, out any) error {
	return c.doTimeout(ctx, c.timeout, method, path, query, body, out)
}

func (c *restClient) doTimeout(ctx context.Context, timeout time.Duration, method, path string, query url.Values, body, out any) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	u := c.base + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return &APIError{Method: method, Path: path, Err: err}
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return &APIError{Method: method, Path: path, Err: err}
	}
	req.SetBasicAuth(c.user, c.password)
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		// *url.Error carries the URL, never the credentials (they are in
		// a header, not in the URL).
		return &APIError{Method: method, Path: path, Err: err}
	}
	defer resp.Body.Close()
	if st := resp.StatusCode; st != http.StatusUnauthorized && st != http.StatusForbidden && st < 502 {
		c.answers.Note()
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		return &APIError{Method: method, Path: path, Err: fmt.Errorf("reading answer: %w", err)}
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return &APIError{Method: method, Path: path, Status: resp.StatusCode, Message: errorMessage(data)}
	}
	if out != nil && len(bytes.TrimSpace(data)) > 0 {
		if err := json.Unmarshal(data, out); err != nil {
			return &APIError{Method: method, Path: path, Status: resp.StatusCode,
				Err: fmt.Errorf("decoding answer: %w", err), Message: "undecodable answer"}
		}
	}
	return nil
}

// errorMessage extracts Asterisk's words from an error body: {"message": …}
// for most errors, {"error": …} for a failed originate, else the text.
func errorMessage(body []byte) string {
	var m struct {
		Message string `json:"message"`
		Error   string `json:"error"`
	}
	if json.Unmarshal(body, &m) == nil {
		if m.Message != "" {
			return m.Message
		}
		if m.Error != "" {
			return m.Error
		}
	}
	s := strings.TrimSpace(string(body))
	if strings.HasPrefix(s, "<") { // an HTML error page (seen once during a restart)
		return ""
	}
	if len(s) > 200 {
		s = s[:200]
	}
	return s
}

func pathEsc(s string) string { return url.PathEscape(s) }

// classify wraps err (an *APIError or anything else) with the pbx sentinel
// the status means for this kind of request. notFound/exists/notReady give
// the sentinel for 404, 409 and 422 (nil: treat as refused).
type statusMap struct {
	notFound, conflict, unprocessable error
}

func classify(what string, err error, m statusMap) error {
	if err == nil {
		return nil
	}
	var ae *APIError
	if !errors.As(err, &ae) {
		return fmt.Errorf("asterisk: %s: %w: %w", what, pbx.ErrUnavailable, err)
	}
	if ae.unavailable() {
		return fmt.Errorf("asterisk: %s: %w: %w", what, pbx.ErrUnavailable, ae)
	}
	var sentinel error
	switch ae.Status {
	case http.StatusNotFound:
		sentinel = m.notFound
	case http.StatusConflict:
		sentinel = m.conflict
	case http.StatusUnprocessableEntity:
		sentinel = m.unprocessable
	}
	if sentinel == nil {
		sentinel = pbx.ErrRefused
	}
	return fmt.Errorf("asterisk: %s: %w: %w", what, sentinel, ae)
}

// statusOf gives the HTTP status inside err, 0 when none.
func statusOf(err error) int {
	var ae *APIError
	if errors.As(err, &ae) {
		return ae.Status
	}
	return 0
}
