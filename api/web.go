package api

import (
	"embed"
	"io/fs"
	"net/http"

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
	files := http.FileServer(http.FS(sub))
	index := func(c echo.Context) error {
		b, err := fs.ReadFile(sub, "index.html")
		if err != nil {
			return err
		}
		c.Response().Header().Set("Cache-Control", "no-cache")
		c.Response().Header().Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'")
		return c.HTMLBlob(http.StatusOK, b)
	}
	e.GET("/", index)
	e.GET("/ui/*", index) // client-side routes
	e.GET("/static/*", echo.WrapHandler(http.StripPrefix("/static/", files)))
}
