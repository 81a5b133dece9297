//! What an edge needs to take part in a cluster, independent of how it talks to the
//! orchestrator: redirect tickets, the drain switch, and the hook that pulls a stream this node
//! does not have from another edge.

mod limits;
mod ticket;
mod token;
mod upstream;

pub use limits::NodeLimits;

pub use ticket::{Ticket, TicketError, TicketKey, TicketScope};
pub use token::bearer_matches;
pub use upstream::Upstream;
