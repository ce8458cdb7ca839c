use serde::{Deserialize, Serialize};
use std::fmt;

/// A person's role: the four organization roles of the Dashboard, plus support agents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Owns the organization.
    Owner,
    /// Administers the organization.
    Admin,
    /// An ordinary team member.
    Member,
    /// A member who may not see the organization's tickets (seed 002).
    Unprivileged,
    /// A support agent on our side.
    Agent,
}

impl Role {
    /// The name stored in the database and shown in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Admin => "admin",
            Role::Member => "member",
            Role::Unprivileged => "unprivileged",
            Role::Agent => "agent",
        }
    }

    /// Parses the stored name.
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "owner" => Role::Owner,
            "admin" => Role::Admin,
            "member" => Role::Member,
            "unprivileged" => Role::Unprivileged,
            "agent" => Role::Agent,
            _ => return None,
        })
    }

    /// Whether a member with this role sees the organization's tickets.
    pub fn sees_org_tickets(self) -> bool {
        matches!(self, Role::Owner | Role::Admin | Role::Member)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether a conversation is a live chat or a ticket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ThreadKind {
    /// A chat, started from the Dashboard.
    Chat,
    /// A ticket, opened from a site's Dashboard.
    Ticket,
}

impl ThreadKind {
    /// The name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            ThreadKind::Chat => "chat",
            ThreadKind::Ticket => "ticket",
        }
    }

    /// Parses the stored name.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "chat" => Some(ThreadKind::Chat),
            "ticket" => Some(ThreadKind::Ticket),
            _ => None,
        }
    }
}

/// Where a message in a thread came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// Posted in the web Dashboard (through the API).
    Dashboard,
    /// Received by email.
    Email,
}

impl Source {
    /// The name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Dashboard => "dashboard",
            Source::Email => "email",
        }
    }
}
