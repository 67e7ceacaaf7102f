//! Things the host wants the user to read (a snapshot served or ignored, a snapshot that could
//! not be written), queued for the provider's logger. Native threads never call into JS: the
//! provider drains this queue on its watcher tick. Bounded, so a provider nobody drains cannot
//! grow it.

use std::collections::VecDeque;
use std::sync::Mutex;

/// Queue bound; older notices are dropped first.
const CAPACITY: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Info,
    Warn,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Info => "info",
            Level::Warn => "warn",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    pub level: Level,
    pub message: String,
}

#[derive(Debug, Default)]
pub struct Notices(Mutex<VecDeque<Notice>>);

impl Notices {
    pub fn push(&self, level: Level, message: impl Into<String>) {
        let mut queue = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if queue.len() == CAPACITY {
            queue.pop_front();
        }
        queue.push_back(Notice { level, message: message.into() });
    }

    /// Everything queued, oldest first.
    pub fn take(&self) -> Vec<Notice> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).drain(..).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_up_to_the_bound() {
        let notices = Notices::default();
        for i in 0..CAPACITY + 3 {
            notices.push(Level::Info, i.to_string());
        }
        let taken = notices.take();
        assert_eq!(taken.len(), CAPACITY);
        assert_eq!(taken[0].message, "3");
        assert!(notices.take().is_empty());
    }
}
