package engine

// Draining reports whether this replica has stopped taking dial requests
// (shutdown under way): a load balancer should stop sending it traffic.
func (en *Engine) Draining() bool { return en.draining.Load() }
