package api

import (
	"embed"
	"io/fs"
	"net/http"
	"strings"

	"github.com/labstack/echo/v4"
)

// The web UI is plain HTML/CSS/JS embedded in the binary: no build step and
// no asset from any other host.
//
//go:embed web
var webFiles embed.FS

//go:embed openapi.yaml
var openAPIDoc []byte

func (s *Server) openAPI(c echo.Context) error {
	return c.Blob(http.StatusOK, "application/yaml", openAPIDoc)
}

// OpenAPIDocument is the API description served at /api/openapi.yaml.
func OpenAPIDocument() []byte { return openAPIDoc }

func (s *Server) mountWeb(e *echo.Echo) {
	sub, err := fs.Sub(webFiles, "web")
	if err != nil {
		panic(err)
	}
	files := http.StripPrefix("/static/", http.FileServer(http.FS(sub)))
	index := func(c echo.Context) error {
		b, err := fs.ReadFile(sub, "index.html")
		if err != nil {
			return err
		}
		c.Response().Header().Set("Cache-Control", "no-cache")
		c.Response().Header().Set("Content-Security-Policy", webCSP)
		return c.HTMLBlob(http.StatusOK, b)
	}
	e.GET("/", index)
	e.GET("/ui/*", index) // client-side routes
	// Every static file carries the pages' policy too: an HTML file opened
	// by its /static/ address (join.html) must not run with fewer limits
	// than the page that normally serves it, and nothing is sniffed into
	// another type. The folder itself is not listed.
	e.GET("/static/*", func(c echo.Context) error {
		name := c.Param("*")
		if st, err := fs.Stat(sub, name); name == "" || strings.HasSuffix(name, "/") || err != nil || st.IsDir() {
			return c.String(http.StatusNotFound, "404 page not found\n")
		}
		h := c.Response().Header()
		h.Set("Content-Security-Policy", webCSP)
		h.Set("X-Content-Type-Options", "nosniff")
		files.ServeHTTP(c.Response(), c.Request())
		return nil
	})
}

// webCSP is the web UI's Content-Security-Policy: nothing inline, nothing
// from another host, never framed.
const webCSP = "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'"
