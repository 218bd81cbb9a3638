//! Status and error codes that cross the boundary as numbers. Each set is an enum numbered from
//! its first value without gaps; `from_u32`/`from_u8` turn an untrusted number into one (or
//! `None`).

macro_rules! codes {
    ($(#[$doc:meta])* $name:ident: $repr:ty { $($(#[$vdoc:meta])* $variant:ident = $value:literal,)* }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[repr($repr)]
        pub enum $name {
            $($(#[$vdoc])* $variant = $value,)*
        }

        impl $name {
            /// Every code, in numeric order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)*];

            /// The code with this number, if any.
            pub fn from_number(n: $repr) -> Option<$name> {
                match n {
                    $($value => Some($name::$variant),)*
                    _ => None,
                }
            }

            /// Its number on the wire.
            pub fn number(self) -> $repr {
                self as $repr
            }
        }
    };
}

codes! {
    /// The status byte that opens a call result or host-call response.
    Status: u8 {
        /// Success: a value follows.
        Ok = 0,
        /// Failure: an error code (u32) and a message (bytes) follow.
        Err = 1,
    }
}

codes! {
    /// Why a guest refused or failed a call (in a call result with status [`Status::Err`]).
    CallError: u32 {
        /// No exported function has the index the host sent.
        NoSuchFunction = 1,
        /// The arguments do not decode as the function's parameter types.
        BadArguments = 2,
        /// The guest function returned an error of its own; the message is its text.
        FunctionFailed = 3,
        /// The result does not fit in the output buffer.
        ResultTooLarge = 4,
        /// The guest function failed because a host call it made failed, and it passed that
        /// failure on (Rust: `?` on a host call); the message is the host's. The host attributes
        /// the failure to the last host call of this guest call that failed.
        HostCallFailed = 5,
    }
}

codes! {
    /// Why the host refused or failed a host call (in a host-call response with status Err).
    HostCallError: u32 {
        /// No host function of that name is registered (or the import is a stub that fails).
        NotFound = 1,
        /// The arguments do not match the host function's parameter types.
        BadArguments = 2,
        /// The host function returned an error.
        Failed = 3,
        /// The host function's result does not fit in the input buffer.
        Refused = 4,
    }
}

codes! {
    /// The level of a log message.
    LogLevel: u8 {
        /// Error.
        Error = 1,
        /// Warning.
        Warn = 2,
        /// Information.
        Info = 3,
        /// Debugging detail.
        Debug = 4,
        /// Tracing detail.
        Trace = 5,
    }
}

codes! {
    /// Why a guest aborted (the first field of an abort message).
    AbortCode: u32 {
        /// The guest panicked; the message is the panic message. (The host reports every abort as
        /// a panic with its message; the code is for guests' own use.)
        Panic = 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_numbered_without_gaps_and_round_trip() {
        fn check<T: Copy + PartialEq + core::fmt::Debug>(all: &[T], number: impl Fn(T) -> u64, first: u64) {
            for (i, &c) in all.iter().enumerate() {
                assert_eq!(number(c), first + i as u64, "{c:?}");
            }
        }
        check(Status::ALL, |c| u64::from(c.number()), 0);
        check(CallError::ALL, |c| u64::from(c.number()), 1);
        check(HostCallError::ALL, |c| u64::from(c.number()), 1);
        check(LogLevel::ALL, |c| u64::from(c.number()), 1);
        check(AbortCode::ALL, |c| u64::from(c.number()), 1);
        for &c in CallError::ALL {
            assert_eq!(CallError::from_number(c.number()), Some(c));
        }
        assert_eq!(CallError::from_number(0), None);
        assert_eq!(CallError::from_number(6), None);
        assert_eq!(HostCallError::from_number(5), None);
        assert_eq!(Status::from_number(2), None);
    }
}
