//! Command opcodes (SQE byte 0) and the Fabrics command type (FCTYPE, SQE byte 4).

macro_rules! opcode_enum {
    ($(#[$edoc:meta])* $name:ident { $( $(#[$doc:meta])* $variant:ident = $value:expr, )* }) => {
        $(#[$edoc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(u8)]
        pub enum $name {
            $( $(#[$doc])* $variant = $value, )*
        }

        impl $name {
            /// Decodes the value; `None` for one this layer does not know.
            pub const fn from_u8(v: u8) -> Option<Self> {
                match v {
                    $( $value => Some(Self::$variant), )*
                    _ => None,
                }
            }
        }

        impl From<$name> for u8 {
            fn from(v: $name) -> u8 {
                v as u8
            }
        }
    };
}

opcode_enum! {
    /// Admin command opcodes (NVMe Base 2.0, "Opcodes for Admin Commands").
    AdminOpcode {
        /// 0x00 Delete I/O Submission Queue (not used on fabrics).
        DeleteIoSq = 0x00,
        /// 0x01 Create I/O Submission Queue (not used on fabrics).
        CreateIoSq = 0x01,
        /// 0x02 Get Log Page.
        GetLogPage = 0x02,
        /// 0x04 Delete I/O Completion Queue (not used on fabrics).
        DeleteIoCq = 0x04,
        /// 0x05 Create I/O Completion Queue (not used on fabrics).
        CreateIoCq = 0x05,
        /// 0x06 Identify.
        Identify = 0x06,
        /// 0x08 Abort.
        Abort = 0x08,
        /// 0x09 Set Features.
        SetFeatures = 0x09,
        /// 0x0A Get Features.
        GetFeatures = 0x0A,
        /// 0x0C Asynchronous Event Request.
        AsyncEventRequest = 0x0C,
        /// 0x0D Namespace Management.
        NamespaceManagement = 0x0D,
        /// 0x10 Firmware Commit.
        FirmwareCommit = 0x10,
        /// 0x11 Firmware Image Download.
        FirmwareImageDownload = 0x11,
        /// 0x14 Device Self-test.
        DeviceSelfTest = 0x14,
        /// 0x15 Namespace Attachment.
        NamespaceAttachment = 0x15,
        /// 0x18 Keep Alive.
        KeepAlive = 0x18,
        /// 0x19 Directive Send.
        DirectiveSend = 0x19,
        /// 0x1A Directive Receive.
        DirectiveReceive = 0x1A,
        /// 0x7F Fabrics command (the FCTYPE at byte 4 says which).
        Fabrics = 0x7F,
        /// 0x80 Format NVM.
        FormatNvm = 0x80,
        /// 0x81 Security Send.
        SecuritySend = 0x81,
        /// 0x82 Security Receive.
        SecurityReceive = 0x82,
        /// 0x84 Sanitize.
        Sanitize = 0x84,
    }
}

opcode_enum! {
    /// NVM command set I/O opcodes (NVM Command Set Specification, "Opcodes for NVM Commands").
    IoOpcode {
        /// 0x00 Flush.
        Flush = 0x00,
        /// 0x01 Write.
        Write = 0x01,
        /// 0x02 Read.
        Read = 0x02,
        /// 0x04 Write Uncorrectable.
        WriteUncorrectable = 0x04,
        /// 0x05 Compare.
        Compare = 0x05,
        /// 0x08 Write Zeroes.
        WriteZeroes = 0x08,
        /// 0x09 Dataset Management.
        DatasetManagement = 0x09,
        /// 0x0C Verify.
        Verify = 0x0C,
        /// 0x0D Reservation Register.
        ReservationRegister = 0x0D,
        /// 0x0E Reservation Report.
        ReservationReport = 0x0E,
        /// 0x11 Reservation Acquire.
        ReservationAcquire = 0x11,
        /// 0x15 Reservation Release.
        ReservationRelease = 0x15,
        /// 0x19 Copy.
        Copy = 0x19,
        /// 0x7F Fabrics command (Connect and Disconnect arrive on I/O queues).
        Fabrics = 0x7F,
    }
}

opcode_enum! {
    /// Fabrics command type (FCTYPE, SQE byte 4 of opcode 0x7F), NVMe over Fabrics 1.1.
    FabricsType {
        /// 0x00 Property Set.
        PropertySet = 0x00,
        /// 0x01 Connect.
        Connect = 0x01,
        /// 0x04 Property Get.
        PropertyGet = 0x04,
        /// 0x05 Authentication Send.
        AuthenticationSend = 0x05,
        /// 0x06 Authentication Receive.
        AuthenticationReceive = 0x06,
        /// 0x08 Disconnect.
        Disconnect = 0x08,
    }
}
