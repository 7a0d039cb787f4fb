package api

import "github.com/labstack/echo/v4"

// mountJoinLinks registers the join-link and guest routes (issue 5).
func (s *Server) mountJoinLinks(e *echo.Echo, public, authed *echo.Group) {}
